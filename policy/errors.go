package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalid is matched by errors.Is for every decoding and validation error.
var ErrInvalid = errors.New("policy: invalid document")

// FieldError is one problem of a document, at a field path such as
// "services.billing.retry.attempts".
type FieldError struct {
	Path string // dotted path; list items as [i]; "" for the whole document
	Msg  string
}

// Error returns "policy: <path>: <msg>".
func (e FieldError) Error() string {
	if e.Path == "" {
		return "policy: " + e.Msg
	}
	return "policy: " + e.Path + ": " + e.Msg
}

// Is reports whether target is ErrInvalid.
func (e FieldError) Is(target error) bool { return target == ErrInvalid }

// ValidationError lists every problem found in a document.
type ValidationError struct {
	Problems []FieldError
}

// Error returns the problems, one per line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.Is(err, ErrInvalid) holds and
// errors.As finds a FieldError.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// Is reports whether target is ErrInvalid, also for an empty problem list.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// join appends a mapping key to a field path: "services" + "billing" is
// "services.billing". A key that is not a plain word is quoted:
// `services["billing.v2"]`.
func join(path, key string) string {
	if !plainKey(key) {
		return path + fmt.Sprintf("[%q]", key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a list index to a field path: "routes[1]".
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func plainKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
