package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Limits of the SPIFFE ID specification.
const (
	// MaxIDLength is the longest SPIFFE ID, in bytes, scheme included.
	MaxIDLength = 2048
	// MaxTrustDomainLength is the longest trust domain name, in bytes.
	MaxTrustDomainLength = 255

	scheme = "spiffe://"
)

// ErrInvalidID is matched by [errors.Is] for every error of [ParseID],
// [NewServiceID], [ConsulServiceID] and [ID.UnmarshalText].
var ErrInvalidID = errors.New("identity: invalid spiffe id")

// ID is a SPIFFE ID: spiffe://<trust domain><path>, for example
// spiffe://mesh.local/svc/billing.
//
// ID is a small comparable value: compare IDs with ==, use them as map keys,
// copy them freely. An ID made by [ParseID], [NewServiceID], [ConsulServiceID]
// or read from a verified peer is always valid. The zero ID is not a valid
// SPIFFE ID: it has an empty trust domain, String returns "" and IsZero
// reports true; it never matches a verified peer.
type ID struct {
	td   string // trust domain name, never empty in a valid ID
	path string // "" or "/seg/seg..."
}

// ParseID parses s as a SPIFFE ID, following the SPIFFE ID specification:
// the scheme is exactly "spiffe" in lower case; the trust domain is not
// empty, at most 255 bytes, and made of a-z, 0-9, '.', '-' and '_'; the path
// is empty or made of non-empty segments of A-Z, a-z, 0-9, '.', '-' and '_'
// other than "." and ".."; there is no port, userinfo, query, fragment or
// percent-encoding, nor a trailing slash; the whole ID is at most 2048 bytes.
//
// Errors name the input and the problem, for example
//
//	identity: spiffe id "spiffe://mesh.local/svc/..": path segment "..": dot segments are not allowed
//
// and match [ErrInvalidID].
func ParseID(s string) (ID, error) {
	if s == "" {
		return ID{}, idErr(s, "empty")
	}
	if len(s) > MaxIDLength {
		return ID{}, idErr(s, fmt.Sprintf("longer than %d bytes", MaxIDLength))
	}
	if !strings.HasPrefix(s, scheme) {
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return ID{}, idErr(s, "scheme must be lower-case \"spiffe\"")
		}
		return ID{}, idErr(s, "scheme must be \"spiffe://\"")
	}
	rest := s[len(scheme):]
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		if rest[i] == '?' {
			return ID{}, idErr(s, "query is not allowed")
		}
		return ID{}, idErr(s, "fragment is not allowed")
	}
	td, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		td, path = rest[:i], rest[i:]
	}
	if problem := checkTrustDomain(td); problem != "" {
		return ID{}, idErr(s, problem)
	}
	if problem := checkPath(path); problem != "" {
		return ID{}, idErr(s, problem)
	}
	return ID{td: td, path: path}, nil
}

// MustParseID is like [ParseID] but panics on error. It is meant for
// constants in tests and examples.
func MustParseID(s string) ID {
	id, err := ParseID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// NewServiceID returns spiffe://<trustDomain>/svc/<service>, the ID the dev CA
// gives a service. Both parts are checked as [ParseID] checks them: service
// must be one valid path segment.
func NewServiceID(trustDomain, service string) (ID, error) {
	return buildID(trustDomain, "svc", service)
}

// ConsulServiceID returns spiffe://<trustDomain>/ns/<namespace>/dc/<datacenter>/svc/<service>,
// the form of the IDs of Consul Connect. Every part is checked as [ParseID]
// checks it: namespace, datacenter and service must each be one valid path
// segment (Consul's open-source namespace is "default").
func ConsulServiceID(trustDomain, namespace, datacenter, service string) (ID, error) {
	return buildID(trustDomain, "ns", namespace, "dc", datacenter, "svc", service)
}

// buildID checks the trust domain and the segments, then joins them.
func buildID(td string, segs ...string) (ID, error) {
	var b strings.Builder
	for _, seg := range segs {
		b.WriteByte('/')
		b.WriteString(seg)
	}
	path := b.String()
	if problem := checkTrustDomain(td); problem != "" {
		return ID{}, idErr(scheme+td+path, problem)
	}
	for _, seg := range segs {
		if problem := checkSegment(seg); problem != "" {
			return ID{}, idErr(scheme+td+path, problem)
		}
	}
	if n := len(scheme) + len(td) + len(path); n > MaxIDLength {
		return ID{}, idErr(scheme+td+path, fmt.Sprintf("longer than %d bytes", MaxIDLength))
	}
	return ID{td: td, path: path}, nil
}

// idFromURL returns the ID of a URI SAN as parsed by crypto/x509, with the
// checks of ParseID. A valid URL costs no allocation, which keeps the per-call
// check of a peer's ID cheap. The scheme is compared after url.Parse folded it
// to lower case.
func idFromURL(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, idErr("", "empty")
	}
	switch {
	case u.Scheme != "spiffe":
		return ID{}, idErr(u.String(), "scheme must be \"spiffe://\"")
	case u.Opaque != "":
		return ID{}, idErr(u.String(), "scheme must be \"spiffe://\"")
	case u.User != nil:
		return ID{}, idErr(u.String(), "userinfo is not allowed")
	case u.RawQuery != "" || u.ForceQuery:
		return ID{}, idErr(u.String(), "query is not allowed")
	case u.Fragment != "" || u.RawFragment != "":
		return ID{}, idErr(u.String(), "fragment is not allowed")
	case u.RawPath != "":
		return ID{}, idErr(u.String(), "percent-encoding is not allowed")
	}
	if problem := checkTrustDomain(u.Host); problem != "" {
		return ID{}, idErr(u.String(), problem)
	}
	if problem := checkPath(u.Path); problem != "" {
		return ID{}, idErr(u.String(), problem)
	}
	if len(scheme)+len(u.Host)+len(u.Path) > MaxIDLength {
		return ID{}, idErr(u.String(), fmt.Sprintf("longer than %d bytes", MaxIDLength))
	}
	return ID{td: u.Host, path: u.Path}, nil
}

// checkTrustDomain returns the problem with a trust domain name, or "".
func checkTrustDomain(td string) string {
	if td == "" {
		return "trust domain is missing"
	}
	if strings.IndexByte(td, '@') >= 0 {
		return "userinfo is not allowed"
	}
	if strings.IndexByte(td, ':') >= 0 {
		return "port is not allowed"
	}
	if len(td) > MaxTrustDomainLength {
		return fmt.Sprintf("trust domain is longer than %d bytes", MaxTrustDomainLength)
	}
	for i := 0; i < len(td); i++ {
		if c := td[i]; !isTrustDomainChar(c) {
			return fmt.Sprintf("trust domain %q: character %q is not allowed (only a-z, 0-9, '.', '-', '_')", td, rune(c))
		}
	}
	return ""
}

// checkPath returns the problem with an ID's path, or "". The empty path is
// valid (the ID of a trust domain).
func checkPath(path string) string {
	if path == "" {
		return ""
	}
	if path[0] != '/' {
		return "path must start with '/'"
	}
	for rest := path[1:]; ; {
		seg := rest
		i := strings.IndexByte(rest, '/')
		if i >= 0 {
			seg = rest[:i]
		}
		if seg == "" {
			if i < 0 {
				return "path has a trailing slash"
			}
			return "path has an empty segment"
		}
		if problem := checkSegment(seg); problem != "" {
			return problem
		}
		if i < 0 {
			return ""
		}
		rest = rest[i+1:]
	}
}

// checkSegment returns the problem with one path segment, or "".
func checkSegment(seg string) string {
	switch seg {
	case "":
		return "path has an empty segment"
	case ".", "..":
		return fmt.Sprintf("path segment %q: dot segments are not allowed", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if isPathChar(c) {
			continue
		}
		if c == '%' {
			return fmt.Sprintf("path segment %q: percent-encoding is not allowed", seg)
		}
		return fmt.Sprintf("path segment %q: character %q is not allowed (only A-Z, a-z, 0-9, '.', '-', '_')", seg, rune(c))
	}
	return ""
}

func isTrustDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// idError is the error of an invalid SPIFFE ID.
type idError struct {
	input   string
	problem string
}

// idErr returns the error for input, shortened in the message when it is
// very long.
func idErr(input, problem string) error {
	const maxShown = 128
	if len(input) > maxShown {
		input = input[:maxShown] + "..."
	}
	return &idError{input: input, problem: problem}
}

func (e *idError) Error() string {
	return fmt.Sprintf("identity: spiffe id %q: %s", e.input, e.problem)
}

func (e *idError) Is(target error) bool { return target == ErrInvalidID }

// String returns the ID as a URI, spiffe://<trust domain><path>, or "" for
// the zero ID. ParseID(id.String()) returns id for every valid ID.
func (id ID) String() string {
	if id.td == "" {
		return ""
	}
	return scheme + id.td + id.path
}

// TrustDomain returns the trust domain name, for example "mesh.local";
// "" for the zero ID.
func (id ID) TrustDomain() string { return id.td }

// Path returns the path, for example "/svc/billing"; "" for the zero ID and
// for the ID of a trust domain itself.
func (id ID) Path() string { return id.path }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id.td == "" }

// MemberOf reports whether id belongs to the trust domain td. The zero ID
// belongs to none.
func (id ID) MemberOf(td string) bool { return id.td != "" && id.td == td }

// Service returns the service name an ID names, recognising the dev CA's form
// /svc/<service> and Consul's forms /ns/<ns>/dc/<dc>/svc/<service> and
// /ap/<partition>/ns/<ns>/dc/<dc>/svc/<service>. It reports false for any
// other path and for the zero ID. It does not allocate.
func (id ID) Service() (string, bool) {
	p := id.path
	switch {
	case strings.HasPrefix(p, "/svc/"):
		return lastSegment(p[len("/svc/"):])
	case strings.HasPrefix(p, "/ap/"):
		_, rest, ok := nextSegment(p[len("/ap/"):])
		if !ok || !strings.HasPrefix(rest, "/ns/") {
			return "", false
		}
		p = rest
		fallthrough
	case strings.HasPrefix(p, "/ns/"):
		_, rest, ok := nextSegment(p[len("/ns/"):])
		if !ok || !strings.HasPrefix(rest, "/dc/") {
			return "", false
		}
		_, rest, ok = nextSegment(rest[len("/dc/"):])
		if !ok || !strings.HasPrefix(rest, "/svc/") {
			return "", false
		}
		return lastSegment(rest[len("/svc/"):])
	}
	return "", false
}

// nextSegment splits "seg/rest..." into seg and "/rest...". ok is false when
// there is no slash.
func nextSegment(s string) (seg, rest string, ok bool) {
	i := strings.IndexByte(s, '/')
	if i <= 0 {
		return "", "", false
	}
	return s[:i], s[i:], true
}

// lastSegment returns s when it is one non-empty segment.
func lastSegment(s string) (string, bool) {
	if s == "" || strings.IndexByte(s, '/') >= 0 {
		return "", false
	}
	return s, true
}

// url returns the ID as the URL of a certificate's URI SAN.
func (id ID) url() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.td, Path: id.path}
}

// MarshalText returns id.String(); the zero ID encodes as "".
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses text with [ParseID]; "" decodes to the zero ID.
func (id *ID) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*id = ID{}
		return nil
	}
	v, err := ParseID(string(text))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
