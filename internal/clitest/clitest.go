// Package clitest builds the quantstream command and reads its real command-line
// interface — the subcommands `quantstream -h` lists and the flags `quantstream CMD -h`
// prints — so that tests of scripts and manifests calling the CLI (examples/slurm,
// examples/k8s) check their command lines against the flags that exist, wherever and
// however those flags are defined.
//
// Interfaces announced by an issue but not built yet are listed in Pending: a command
// line may use them, and the check reports them as pending instead of failing. Once
// one exists the check fails until it is removed from Pending, so the list cannot
// outlive the work it stands for.
package clitest

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Pending lists the subcommands ("merge") and flags ("convert --shard") that the
// examples already use but that are still being built, with where they are asked for.
// Remove an entry in the change that implements it.
var Pending = map[string]string{}

// Build compiles ./cmd/quantstream into a temporary directory of t and returns the
// binary's path.
func Build(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the quantstream CLI: no go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "quantstream")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/quantstream/quantstream/cmd/quantstream")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/quantstream: %v\n%s", err, out)
	}
	return bin
}

// Flag is one flag of a subcommand.
type Flag struct {
	Name       string
	TakesValue bool // false for a boolean flag (--overwrite)
}

// CLI is the command-line interface of one quantstream binary, read from its help.
type CLI struct {
	Bin      string
	Commands map[string]bool
	flags    map[string]map[string]Flag
}

// Load reads the subcommands of bin from `bin -h`.
func Load(bin string) (*CLI, error) {
	out := helpOutput(bin, "-h")
	cmds := parseCommands(out)
	if len(cmds) == 0 {
		return nil, fmt.Errorf("clitest: no commands found in the output of `%s -h` (want a \"commands:\" section of lines \"  name  description\"):\n%s", bin, out)
	}
	return &CLI{Bin: bin, Commands: cmds, flags: map[string]map[string]Flag{}}, nil
}

// Flags returns the flags of subcommand cmd, read from `bin cmd -h`.
func (c *CLI) Flags(cmd string) (map[string]Flag, error) {
	if f, ok := c.flags[cmd]; ok {
		return f, nil
	}
	if !c.Commands[cmd] {
		return nil, fmt.Errorf("clitest: %s has no command %q (it has %s)", c.Bin, cmd, strings.Join(sortedKeys(c.Commands), ", "))
	}
	out := helpOutput(c.Bin, cmd, "-h")
	f := parseFlags(out)
	if len(f) == 0 {
		return nil, fmt.Errorf("clitest: no flags found in the output of `%s %s -h`:\n%s", c.Bin, cmd, out)
	}
	c.flags[cmd] = f
	return f, nil
}

// Invocation is one parsed command line.
type Invocation struct {
	Command string
	Flags   map[string][]string // flag name (no dashes) → its values in order; "true" for a bare boolean
}

// Value is the last value of flag name ("" if absent): what Go's flag package keeps.
func (inv Invocation) Value(name string) string {
	v := inv.Flags[name]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// Check parses and checks one invocation, args being what follows the binary (the
// subcommand first). It returns the flags it read, the problems — an unknown command
// or flag, a flag missing its value, an argument that ends flag parsing before later
// flags — and, separately, the uses of Pending interfaces that do not exist yet. Using
// a Pending interface that does exist is a problem: its entry must go.
func (c *CLI) Check(args []string) (inv Invocation, problems, pending []string) {
	inv.Flags = map[string][]string{}
	if len(args) == 0 {
		return inv, []string{"no subcommand"}, nil
	}
	cmd, rest := args[0], args[1:]
	inv.Command = cmd
	_, cmdPending := Pending[cmd]
	if cmdPending && c.Commands[cmd] {
		problems = append(problems, fmt.Sprintf("%q exists now: remove it from clitest.Pending", cmd))
		cmdPending = false
	}
	var flags map[string]Flag
	if cmdPending {
		pending = append(pending, fmt.Sprintf("%q does not exist yet (%s); its flags are not checked", cmd, Pending[cmd]))
	} else {
		var err error
		if flags, err = c.Flags(cmd); err != nil {
			return inv, append(problems, err.Error()), nil
		}
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			if i+1 < len(rest) {
				problems = append(problems, fmt.Sprintf("%s: arguments after \"--\" (%q) are not flags", cmd, rest[i+1:]))
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			// Go's flag package stops at the first argument that is not a flag: any
			// flag after it would silently be an argument.
			problems = append(problems, fmt.Sprintf("%s: argument %q is not a flag; flag parsing stops there (%q not read as flags)", cmd, a, rest[i+1:]))
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		key := cmd + " --" + name
		f, ok := flags[name]
		switch why, p := Pending[key]; {
		case cmdPending || p && !ok:
			// Not checkable: assume it takes a value, as --shard and --out do.
			if p {
				pending = append(pending, fmt.Sprintf("%s does not exist yet (%s)", key, why))
			}
			f, ok = Flag{Name: name, TakesValue: true}, true
		case p:
			problems = append(problems, fmt.Sprintf("%s exists now: remove it from clitest.Pending", key))
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: flag --%s does not exist (%s %s -h lists %s)", cmd, name, filepath.Base(c.Bin), cmd, strings.Join(sortedFlagNames(flags), ", ")))
			if !hasValue && i+1 < len(rest) && !strings.HasPrefix(rest[i+1], "-") {
				i++ // most likely its value: one problem is enough
			}
			continue
		}
		switch {
		case hasValue:
		case !f.TakesValue:
			value = "true"
		case i+1 >= len(rest):
			problems = append(problems, fmt.Sprintf("%s: flag --%s needs a value", cmd, name))
			continue
		default:
			i++
			value = rest[i]
		}
		inv.Flags[name] = append(inv.Flags[name], value)
	}
	return inv, problems, pending
}

// helpOutput runs bin with args and returns stdout and stderr together, whatever the
// exit status (a subcommand's -h prints on stdout and exits 0; older builds printed
// on stderr and exited 2).
func helpOutput(bin string, args ...string) string {
	var b bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &b, &b
	_ = cmd.Run() // the status carries nothing: only the text is read
	return b.String()
}

var commandLine = regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s{2,}\S`)

// parseCommands reads the "commands:" section of the top-level usage: one command per
// line indented by two spaces, continuation lines indented further.
func parseCommands(out string) map[string]bool {
	cmds := map[string]bool{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "commands:":
			in = true
		case in && strings.TrimSpace(line) == "":
			in = len(cmds) == 0 // the section ends at the first blank line after it starts
		case in:
			if m := commandLine.FindStringSubmatch(line); m != nil {
				cmds[m[1]] = true
			}
		}
	}
	return cmds
}

// flagLine matches a flag in the form Go's flag.PrintDefaults writes ("  -name type"
// or "  -name" for a boolean, usage on the next line or after a tab for one-letter
// names; the type may be a name the usage gives in backquotes, such as I/N), and
// tolerates a double dash.
var flagLine = regexp.MustCompile(`^  --?([A-Za-z0-9][A-Za-z0-9_.-]*)(?: ([A-Za-z][^\s]*))?(?:\t.*)?$`)

func parseFlags(out string) map[string]Flag {
	flags := map[string]Flag{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = Flag{Name: m[1], TakesValue: m[2] != ""}
		}
	}
	return flags
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func sortedFlagNames(m map[string]Flag) []string {
	names := sortedKeys(m)
	for i, n := range names {
		names[i] = "--" + n
	}
	return names
}
