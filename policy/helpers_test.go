package policy

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// problemsOf returns the problems of err as "path: msg" strings, failing the
// test when err is not a *ValidationError that matches ErrInvalid.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T is not a *ValidationError: %v", err, err)
	}
	var out []string
	for _, p := range ve.Problems {
		if p.Path == "" {
			out = append(out, p.Msg)
		} else {
			out = append(out, p.Path+": "+p.Msg)
		}
	}
	return out
}

// wantProblem checks that err has the problem "path: msg" exactly.
func wantProblem(t *testing.T, err error, want string) {
	t.Helper()
	got := problemsOf(t, err)
	if !slices.Contains(got, want) {
		t.Errorf("problem %q not found in:\n  %s", want, strings.Join(got, "\n  "))
	}
}

func mustParse(t testing.TB, yaml string) *Document {
	t.Helper()
	doc, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, yaml)
	}
	return doc
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// wantProblems parses in and checks that it is valid (want nil) or that
// its problems are exactly want, in order.
func wantProblems(t *testing.T, in string, want []string) {
	t.Helper()
	_, err := Parse([]byte(in))
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	got := problemsOf(t, err)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
