/* signals.h — the command line's handlers for the signals that would otherwise leave something
 * half-done or unexplained (the libraries only register what the handlers need: loader/m4_faults.h).
 *
 *   SIGINT, SIGTERM, SIGHUP: every temporary output file being written is removed, then the
 *     signal is raised again with its default action, so the exit status says what stopped the
 *     process (130 for Ctrl-C in a shell). A signal the caller ignores (nohup, `&` in a script)
 *     stays ignored.
 *   SIGBUS: a read from a mapped file that shrank (a shard truncated by another process while the
 *     model is open) prints "mistral4: PATH: the file shrank while mapped (truncated by another
 *     process?)" and exits with status 1, after removing the temporary files. A SIGBUS outside
 *     every registered mapping is a bug: it gets the default action (a core dump to debug). */
#ifndef M4_CLI_SIGNALS_H
#define M4_CLI_SIGNALS_H

/* Installs the handlers; called once by main() before any command runs. */
void cli_install_signal_handlers(void);

#endif
