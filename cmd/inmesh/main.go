// Command inmesh is the operator's tool for inmesh policies: it validates a
// policy document and explains what the mesh would do with a request.
//
//	inmesh validate FILE
//	inmesh explain [--json] FILE URL [-H name:value]... [-X METHOD]
//	inmesh push FILE --consul ADDR [--prefix inmesh]
//	inmesh get --consul ADDR [--prefix inmesh] [-o FILE]
//
// validate exits 0 for a valid document and 1 with one line per problem,
// each naming its field. push validates a file and writes it to Consul KV
// (a key per service, the defaults, and <prefix>/mesh for egress and
// trust_domain; see package consul), get reads it back into one document. explain exits 0 when the mesh would send the
// request and 1 when it would fail it, saying at which layer.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  inmesh validate FILE
  inmesh explain [--json] FILE URL [-H name:value]... [-X METHOD]
  inmesh push FILE --consul ADDR [--prefix inmesh]
  inmesh get --consul ADDR [--prefix inmesh] [-o FILE]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "explain":
		return explain(args[1:], stdout, stderr)
	case "push":
		return push(args[1:], stdout, stderr)
	case "get":
		return get(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "inmesh: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
