package clitest

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	cli, err := Load(Build(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"convert", "plan", "merge", "parity", "dump-arrow", "version"} {
		if !cli.Commands[c] {
			t.Errorf("command %q not read from quantstream -h (read %v)", c, slices.Sorted(maps.Keys(cli.Commands)))
		}
	}
	flags, err := cli.Flags("convert")
	if err != nil {
		t.Fatal(err)
	}
	if f := flags["in"]; !f.TakesValue {
		t.Errorf("convert --in: %+v, want a flag taking a value", f)
	}
	if f, ok := flags["overwrite"]; !ok || f.TakesValue {
		t.Errorf("convert --overwrite: %+v, want a boolean flag", f)
	}

	for _, tc := range []struct {
		name     string
		args     []string
		problems []string // substrings, one per problem
		pending  int
		flags    map[string][]string
	}{
		{
			name:  "good",
			args:  []string{"convert", "--in", "a", "--in=b", "-out", "o", "--overwrite", "--workers", "2"},
			flags: map[string][]string{"in": {"a", "b"}, "out": {"o"}, "overwrite": {"true"}, "workers": {"2"}},
		},
		{name: "unknown flag", args: []string{"convert", "--in", "a", "--bogus", "1"}, problems: []string{"flag --bogus does not exist"}},
		{name: "missing value", args: []string{"convert", "--in"}, problems: []string{"flag --in needs a value"}},
		{name: "positional stops flags", args: []string{"convert", "--in", "a", "extra", "--out", "o"}, problems: []string{`argument "extra" is not a flag`}},
		{name: "merge has no --in", args: []string{"merge", "--in", "a", "--out", "o"}, problems: []string{"merge: flag --in does not exist"}},
		{name: "plan takes convert's flags", args: []string{"plan", "--in", "a", "--out", "o", "--shard", "1/4"}, flags: map[string][]string{"in": {"a"}, "out": {"o"}, "shard": {"1/4"}}},
		{name: "shard takes a value", args: []string{"convert", "--in", "a", "--shard", "0/4", "--out", "o"}, flags: map[string][]string{"in": {"a"}, "shard": {"0/4"}, "out": {"o"}}},
		{name: "unknown command", args: []string{"frobnicate"}, problems: []string{`no command "frobnicate"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, problems, pending := cli.Check(tc.args)
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d matching %q", problems, len(tc.problems), tc.problems)
			}
			for i, p := range problems {
				if !strings.Contains(p, tc.problems[i]) {
					t.Errorf("problem %q, want it to contain %q", p, tc.problems[i])
				}
			}
			if len(pending) != tc.pending {
				t.Errorf("pending %q, want %d", pending, tc.pending)
			}
			if tc.flags != nil && !maps.EqualFunc(inv.Flags, tc.flags, slices.Equal) {
				t.Errorf("flags %v, want %v", inv.Flags, tc.flags)
			}
		})
	}
}

// TestPendingExistsIsAProblem: once a pending interface exists, every use of it fails
// the check until its entry is removed.
func TestPendingExistsIsAProblem(t *testing.T) {
	cli, err := Load(Build(t))
	if err != nil {
		t.Fatal(err)
	}
	saved := Pending
	t.Cleanup(func() { Pending = saved })
	Pending = map[string]string{"plan": "x", "convert --workers": "y"}
	for _, args := range [][]string{{"plan", "--in", "a"}, {"convert", "--workers", "2"}} {
		_, problems, pending := cli.Check(args)
		if len(problems) != 1 || !strings.Contains(problems[0], "exists now: remove it from clitest.Pending") || len(pending) != 0 {
			t.Errorf("%q: problems %q, pending %q; want one \"exists now\" problem", args, problems, pending)
		}
	}
}

func TestParseHelp(t *testing.T) {
	flags := parseFlags("usage: x\n  -a\tone-letter bool\n  -b int\n    \tusage\n  -long-name string\n    \tusage (default \"x\")\n  --dd value\n    \tdouble dash\n")
	want := map[string]Flag{"a": {"a", false}, "b": {"b", true}, "long-name": {"long-name", true}, "dd": {"dd", true}}
	if !maps.Equal(flags, want) {
		t.Errorf("parseFlags: %v, want %v", flags, want)
	}
	cmds := parseCommands("usage\n\ncommands:\n  convert      does\n               more text\n  plan         p\n\nRun 'x -h'\n  notacommand  x\n")
	if !maps.Equal(cmds, map[string]bool{"convert": true, "plan": true}) {
		t.Errorf("parseCommands: %v", cmds)
	}
}

// TestPendingNotYet: a use of a Pending interface that does not exist is reported
// as pending, not as a problem, and its flags are read.
func TestPendingNotYet(t *testing.T) {
	cli, err := Load(Build(t))
	if err != nil {
		t.Fatal(err)
	}
	saved := Pending
	t.Cleanup(func() { Pending = saved })
	Pending = map[string]string{"frob": "issue 0", "convert --frob": "issue 0"}
	for _, args := range [][]string{{"frob", "--out", "o"}, {"convert", "--in", "a", "--frob", "x"}} {
		inv, problems, pending := cli.Check(args)
		if len(problems) != 0 || len(pending) != 1 || inv.Value("out")+inv.Value("frob") == "" {
			t.Errorf("%q: problems %q, pending %q, flags %v; want one pending use", args, problems, pending, inv.Flags)
		}
	}
}
