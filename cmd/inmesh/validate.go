package main

import (
	"errors"
	"fmt"
	"io"
	"os"

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
}

// problem is one validation problem; Field is "" for the whole document.
type problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// validate checks one policy file and prints one line per problem.
func validate(args []string, stdout, stderr io.Writer) int {
	c := newCommand("validate", `inmesh validate [-o text|json] FILE

Checks a policy document. Exits 0 when it is valid, 1 with one line per
problem, each naming its field.`, stderr)
	out := c.outputFlag()
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(stderr)
	}
	snap, err := load(pos[0])
	if *out == "json" {
		res := validateResult{File: pos[0], Valid: err == nil}
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
	fmt.Fprintf(stdout, "%s: valid: version %s, %d services\n", pos[0], snap.Version, len(snap.Services))
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
