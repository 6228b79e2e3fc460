/* signals.c — see signals.h. The handlers call only async-signal-safe functions (unlink, write,
 * sigaction, raise, _exit) and the m4_faults readers, which are. */
#define _DEFAULT_SOURCE /* SA_RESETHAND with -std=c11 */
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "m4_faults.h"

static void write_text(const char *text) {
    for (size_t left = strlen(text); left > 0;) {
        ssize_t n = write(STDERR_FILENO, text, left);
        if (n <= 0) return;
        text += n, left -= (size_t)n;
    }
}

/* SIGINT, SIGTERM, SIGHUP (installed with SA_RESETHAND: the action is the default again here, and
 * the raised signal is delivered as soon as the handler returns). */
static void on_termination(int sig) {
    m4_faults_remove_temporaries();
    raise(sig);
}

static void on_bus_error(int sig, siginfo_t *info, void *context) {
    (void)context;
    const char *path = m4_faults_mapped_file(info->si_addr);
    if (!path) {
        /* not a mapped file: returning re-runs the faulting access under the default action */
        signal(sig, SIG_DFL);
        return;
    }
    m4_faults_remove_temporaries();
    write_text("mistral4: ");
    write_text(path);
    write_text(": the file shrank while mapped (truncated by another process?)\n");
    _exit(CLI_FAILED);
}

void cli_install_signal_handlers(void) {
    static const int terminations[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof terminations / sizeof *terminations; i++) {
        struct sigaction old, sa = {.sa_handler = on_termination, .sa_flags = SA_RESETHAND};
        sigemptyset(&sa.sa_mask);
        if (sigaction(terminations[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(terminations[i], &sa, NULL);
    }
    struct sigaction bus = {.sa_sigaction = on_bus_error, .sa_flags = SA_SIGINFO};
    sigemptyset(&bus.sa_mask);
    sigaction(SIGBUS, &bus, NULL);
}
