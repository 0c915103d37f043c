package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/inmesh/inmesh/policy"
)

// validate checks one policy file and prints one line per problem.
func validate(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, "usage: inmesh validate FILE\n")
		return 2
	}
	snap, err := load(args[0])
	if err != nil {
		printProblems(stderr, args[0], err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid: version %s, %d services\n", args[0], snap.Version, len(snap.Services))
	return 0
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
