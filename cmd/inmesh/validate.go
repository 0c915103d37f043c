package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/policy"
)

// validateResult is what validate -o json prints.
type validateResult struct {
	File     string    `json:"file"`
	Valid    bool      `json:"valid"`
	Version  string    `json:"version,omitempty"`
	Hash     string    `json:"hash,omitempty"`
	Services int       `json:"services"`
	Problems []problem `json:"problems,omitempty"`
	// Warnings, with --consul, lists the fields that Consul's config
	// entries override.
	Warnings []string `json:"warnings,omitempty"`
}

// problem is one validation problem; Field is "" for the whole document.
type problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// validate checks one policy file and prints one line per problem.
func validate(args []string, stdout, stderr io.Writer) int {
	c := newCommand("validate", `inmesh validate [-o text|json] [--consul ADDR [--as SERVICE] [--token TOKEN]] FILE

Checks a policy document. Exits 0 when it is valid, 1 with one line per
problem, each naming its field. With --consul, it also warns of each field
that Consul's config entries override (discovery chains, and the
service-defaults UpstreamConfig of the calling service --as), as a mesh on
Consul would apply them.`, stderr)
	out := c.outputFlag()
	var cf consulFlags
	c.fs.StringVar(&cf.addr, "consul", "", "Consul HTTP address, host:port: warn of the fields config entries shadow")
	c.fs.StringVar(&cf.token, "token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
	as := c.fs.String("as", "", "with --consul, the calling service, whose service-defaults UpstreamConfig applies")
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(stderr)
	}
	snap, err := load(pos[0])
	var warnings []string
	if err == nil && cf.addr != "" {
		if warnings, err = shadowed(cf, snap.Doc, *as); err != nil {
			fmt.Fprintf(stderr, "inmesh validate: %v\n", err)
			return 1
		}
	}
	if *out == "json" {
		res := validateResult{File: pos[0], Valid: err == nil, Warnings: warnings}
		if err != nil {
			res.Problems = problems(err)
		} else {
			res.Version, res.Hash, res.Services = snap.Version, snap.Hash, len(snap.Services)
		}
		writeJSON(stdout, res)
		if err != nil {
			return 1
		}
		return 0
	}
	if err != nil {
		printProblems(stderr, pos[0], err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "%s: warning: shadowed by a Consul config entry: %s\n", pos[0], w)
	}
	fmt.Fprintf(stdout, "%s: valid: version %s, %d services\n", pos[0], snap.Version, len(snap.Services))
	return 0
}

// shadowed lists the fields of doc that the config entries of the Consul
// at cf override, for the calling service as.
func shadowed(cf consulFlags, doc *policy.Document, as string) ([]string, error) {
	client, err := cf.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return consul.Shadowed(ctx, client, doc, as)
}

// load reads, parses and resolves a policy file.
func load(path string) (*policy.Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := policy.Parse(data)
	if err != nil {
		return nil, err
	}
	return policy.NewSnapshot(doc, "file:"+path)
}

// problems lists the validation problems of err, or err itself.
func problems(err error) []problem {
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		out := make([]problem, len(ve.Problems))
		for i, p := range ve.Problems {
			out[i] = problem{Field: p.Path, Message: p.Msg}
		}
		return out
	}
	return []problem{{Message: err.Error()}}
}

// printProblems writes one line per validation problem, or the error.
func printProblems(w io.Writer, path string, err error) {
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Fprintf(w, "%s: %s\n", path, p.Error())
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}
