/* main.c — `mistral4 <command> [options]`: the one table of subcommands and the top-level
 * options (--help, --version). Each command parses its own options; see cli.h for exit codes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "files.h"
#include "signals.h"

#ifndef M4_VERSION
#define M4_VERSION "unknown"
#endif
#ifndef M4_GIT_DESCRIBE
#define M4_GIT_DESCRIBE ""
#endif

typedef struct {
    const char *name;
    const char *summary;      /* one line for the top-level help */
    cli_command_fn run;
} cli_command;

/* Every subcommand, in the order `mistral4 --help` lists them. Adding a command is one row here,
 * its prototype in cli.h and its cmd_<name>.c. */
static const cli_command commands[] = {
    {"inspect", "print a model's config, module tree, parameter counts and per-token cost", cmd_inspect},
    {"conform", "check an implementation against golden Hugging Face activations", cmd_conform},
    {"preprocess", "decode images and compute Pixtral pixel values, image sizes and image tokens", cmd_preprocess},
    {"tokenize", "text, a prompt or a conversation (+ images) to token ids, and ids to text", cmd_tokenize},
    {"run", "generate text from a prompt, a conversation or token ids (+ images)", cmd_run},
    {"bench", "time generation end to end (prefill and decode tokens/s) on a backend", cmd_bench},
};
static const size_t n_commands = sizeof commands / sizeof commands[0];

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mistral4%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mistral4%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "Try 'mistral4%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
    return CLI_USAGE;
}

int cli_check_output(const char *cmd, const char *option, const char *path) {
    char why[4200];
    if (!path || cli_output_problem(path, why, sizeof why) == 0) return CLI_OK;
    cli_error(cmd, "%s %s: %s", option, path, why);
    return CLI_FAILED;
}

int cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

const char *cli_version(void) {
    static char line[160];
    if (M4_GIT_DESCRIBE[0])
        snprintf(line, sizeof line, "mistral4 %s (git %s)", M4_VERSION, M4_GIT_DESCRIBE);
    else
        snprintf(line, sizeof line, "mistral4 %s", M4_VERSION);
    return line;
}

/* The backends built in, and the fast paths of those that have some (the table, with each path's
 * twin and proof, as the environment switches them now). */
static void print_backends(FILE *out) {
    fprintf(out, "\nBackends built in (--backend of conform, run, bench):\n");
    const m4_backend *const *list = m4_backend_list();
    for (size_t i = 0; list[i]; i++) fprintf(out, "  %-10s %s\n", list[i]->name, list[i]->description);
    void (*described)(char *, size_t, int) = NULL;
    for (size_t i = 0; list[i]; i++) {
        if (!list[i]->describe_paths || list[i]->describe_paths == described) continue;
        described = list[i]->describe_paths;
        char table[4096];
        described(table, sizeof table, 1);
        fprintf(out,
                "\nFast paths of %s and the backends after it, each with a simpler twin. Only paths a committed\n"
                "GPU run has proven are on by default; M4_CUDA_ENABLE=name,...|all switches others on,\n"
                "M4_CUDA_DISABLE=name,...|all switches paths off (optimized/paths.h):\n%s",
                list[i]->name, table);
    }
}

static void print_usage(FILE *out) {
    fprintf(out,
            "Usage: mistral4 <command> [options]\n"
            "       mistral4 help <command>\n"
            "       mistral4 --help | --version\n"
            "\n"
            "A test, benchmark and inspection tool for Mistral 4 (Mistral3ForConditionalGeneration:\n"
            "Pixtral vision + projector + Mistral4 MLA/MoE text model).\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < n_commands; i++) fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Options:\n"
            "  -h, --help     show this help (after a command: that command's help)\n"
            "  --version      print the version and exit\n"
            "\n"
            "Examples:\n"
            "  mistral4 inspect /models/Mistral-Small-4-119B-2603\n"
            "  mistral4 inspect config.json --json --context 32768\n"
            "  mistral4 conform --case golden/cases/text_tiny\n"
            "  mistral4 help inspect\n"
            "\n"
            "Exit status: 0 success, 1 the command failed, 2 usage error.\n");
    print_backends(out);
}

static const cli_command *find_command(const char *name) {
    for (size_t i = 0; i < n_commands; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

/* `mistral4 help [command]` */
static int help_command(int argc, char **argv) {
    if (argc < 3) {
        print_usage(stdout);
        return CLI_OK;
    }
    const cli_command *c = find_command(argv[2]);
    if (!c) {
        cli_error(NULL, "unknown command '%s'", argv[2]);
        print_usage(stderr);
        return CLI_USAGE;
    }
    char *help_argv[] = {argv[2], "--help", NULL};
    return c->run(2, help_argv);
}

int main(int argc, char **argv) {
    cli_install_signal_handlers();
    if (argc < 2) {
        print_usage(stderr);
        return CLI_USAGE;
    }
    const char *first = argv[1];
    if (cli_is_help(first)) {
        print_usage(stdout);
        return CLI_OK;
    }
    if (strcmp(first, "--version") == 0) {
        printf("%s\n", cli_version());
        return CLI_OK;
    }
    if (strcmp(first, "help") == 0) return help_command(argc, argv);
    if (first[0] == '-') {
        cli_error(NULL, "unknown option '%s'", first);
        print_usage(stderr);
        return CLI_USAGE;
    }
    const cli_command *c = find_command(first);
    if (!c) {
        cli_error(NULL, "unknown command '%s'", first);
        print_usage(stderr);
        return CLI_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
