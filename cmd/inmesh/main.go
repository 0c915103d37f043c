// Command inmesh is the operator's tool for inmesh policies: it validates a
// policy document, explains what the mesh would do with a request, says
// what would change between two documents, moves a policy in and out of
// Consul KV, and shows what a running process has in force.
//
//	inmesh validate [-o text|json] FILE
//	inmesh explain [-o text|json] [--as SERVICE] FILE URL [-H name:value]... [-X METHOD]
//	inmesh diff [-o text|json] [--consul ADDR] [--prefix inmesh] A B
//	inmesh push FILE [--consul ADDR] [--prefix inmesh]
//	inmesh get [--consul ADDR] [--prefix inmesh] [-o json|text] [--file FILE]
//	inmesh status --admin URL [-o text|json]
//	inmesh version [-o text|json]
//
// Every command takes -h for its usage and flags, before or after its
// arguments; an unknown flag exits 2 naming it. Results are for a person
// by default and JSON with -o json.
//
// validate exits 0 for a valid document and 1 with one line per problem,
// each naming its field. explain says what the mesh would do and why (the
// routes tried, and where in the document each setting came from); it
// exits 0 when the mesh would send the request and 1 when it would fail
// it, saying at which layer; --as names the calling service whose
// authorization it shows (default inmesh-cli).
// diff compares the resolved view of two documents (the effective settings,
// routes, endpoints, subsets, authorization and protections of each
// service, after the defaults) and lists only the services that change,
// field by field; it exits 0 when they are the same, 1 when they differ and
// 2 on error, like diff(1). A or B may be consul: (or consul:ADDR), the
// policy in Consul KV, to see what a push would change. push validates a file and writes it to Consul
// KV (a key per service, the defaults, and <prefix>/mesh for egress and
// trust_domain; see package consul), get reads it back into one document.
// status --admin reads a running process's admin handler (see
// mesh.AdminHandler) at URL: its service, policy version and source, when
// it was loaded, the updates applied and rejected, the breakers that are
// not closed and the faults injected. version prints the module version,
// the VCS revision it was built from and the Go version.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  inmesh validate [-o text|json] FILE
  inmesh explain [-o text|json] [--as SERVICE] FILE URL [-H name:value]... [-X METHOD]
  inmesh diff [-o text|json] [--consul ADDR] [--prefix inmesh] A B
  inmesh push FILE [--consul ADDR] [--prefix inmesh]
  inmesh get [--consul ADDR] [--prefix inmesh] [-o json|text] [--file FILE]
  inmesh status --admin URL [-o text|json]
  inmesh version [-o text|json]

Run 'inmesh COMMAND -h' for a command's flags.
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
	case "diff":
		return diff(args[1:], stdout, stderr)
	case "push":
		return push(args[1:], stdout, stderr)
	case "get":
		return get(args[1:], stdout, stderr)
	case "status":
		return status(args[1:], stdout, stderr)
	case "version":
		return version(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "inmesh: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
