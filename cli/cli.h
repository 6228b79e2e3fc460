/* cli.h — what the `mistral4` subcommands share: their entry points, exit codes and message
 * helpers. Only cli/ prints; everything below returns a status and an m4_error. */
#ifndef M4_CLI_H
#define M4_CLI_H

#include <stdio.h>

/* Exit codes of every command. */
enum {
    CLI_OK = 0,      /* the work was done */
    CLI_FAILED = 1,  /* the work failed: unreadable file, bad checkpoint, failed check … */
    CLI_USAGE = 2,   /* the command line itself was wrong */
};

/* A subcommand: argv[0] is the command's name, argv[1..argc-1] its arguments. Returns an exit
 * code. Every command answers -h/--help itself (exit 0). */
typedef int (*cli_command_fn)(int argc, char **argv);

/* "mistral4 <cmd>: <message>\n" on stderr. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void cli_error(const char *cmd, const char *fmt, ...);

/* cli_error, then "Try 'mistral4 <cmd> --help'." Returns CLI_USAGE. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int cli_usage_error(const char *cmd, const char *fmt, ...);

/* Refuses an output path before the work starts: CLI_OK when `path` (the value of `option`) can
 * be written (files.h: cli_output_problem), else "mistral4 <cmd>: OPTION PATH: why" and CLI_FAILED.
 * A NULL path (option not given) is CLI_OK. */
int cli_check_output(const char *cmd, const char *option, const char *path);

/* true when `arg` is -h or --help */
int cli_is_help(const char *arg);

/* The backends built into this binary, comma-separated ("ref, cuda-fp32, cuda-bf16"). */
const char *cli_backend_list(void);

/* The version line ("mistral4 0.1.0 (git abc1234)"). */
const char *cli_version(void);

/* ---- the commands (one file each: cmd_<name>.c) ---- */
int cmd_inspect(int argc, char **argv);
int cmd_conform(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
