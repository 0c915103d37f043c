package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one subcommand's flag set and usage text.
type command struct {
	name  string
	usage string // the synopsis and the flags' help, printed by -h
	fs    *flag.FlagSet
}

// newCommand returns the flag set of subcommand name. Its errors go to
// stderr; its usage is printed by parse.
func newCommand(name, usage string, stderr io.Writer) *command {
	fs := flag.NewFlagSet("inmesh "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // parse prints it, to stdout for -h
	return &command{name: name, usage: usage, fs: fs}
}

// parse parses args, where flags and positional arguments may mix ("--"
// ends the flags), and returns the positional arguments. done is true when
// the command must stop with code: 0 after -h or --help printed the usage
// to stdout, 2 after a bad flag (the flag package names it on stderr).
func (c *command) parse(args []string, stdout, stderr io.Writer) (pos []string, code int, done bool) {
	for {
		err := c.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(stdout)
			return nil, 0, true
		}
		if err != nil {
			fmt.Fprintf(stderr, "usage: %s\nrun 'inmesh %s -h' for the flags\n", c.synopsis(), c.name)
			return nil, 2, true
		}
		rest := c.fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, false
		}
		if len(rest) == 0 {
			return pos, 0, false
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError prints the synopsis for a wrong number of arguments and
// returns exit code 2.
func (c *command) usageError(stderr io.Writer) int {
	fmt.Fprintf(stderr, "usage: %s\n", c.synopsis())
	return 2
}

func (c *command) synopsis() string {
	first, _, _ := strings.Cut(c.usage, "\n")
	return first
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", strings.TrimRight(c.usage, "\n"))
	var b strings.Builder
	c.fs.SetOutput(&b)
	c.fs.PrintDefaults()
	c.fs.SetOutput(w) // not used again: parse has finished
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nflags:\n%s", b.String())
	}
}

// format is the -o flag: text (for a person, the default) or json.
type format string

func (f *format) String() string { return string(*f) }

func (f *format) Set(s string) error {
	switch s {
	case "text", "json":
		*f = format(s)
		return nil
	}
	return fmt.Errorf("want text or json")
}

// outputFlag registers -o on c and returns its value.
func (c *command) outputFlag() *format {
	f := format("text")
	c.fs.Var(&f, "o", "output format: text or json")
	return &f
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ", ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
