package identity

import (
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/inmesh/inmesh/policy"
)

// Decision is the outcome of [Authorizer.Authorize].
type Decision struct {
	// Allow says whether the call may proceed (under mode audit, whether
	// it would: see [Authorizer.Audit]).
	Allow bool
	// Rule is the index, in the list List names, of the rule that decided:
	// the allow rule that allowed the call, or the deny rule that denied
	// it. It is -1 when no rule decided (the default, or a failed check).
	Rule int
	// List names the list Rule indexes. Deciders other than an Authorizer
	// (a control plane's own rules) may leave it ListNone and say which
	// rule decided in Reason.
	List RuleList
	// Name is the rule that decided as logs, telemetry and Explain name
	// it: "rules[3]", "deny[0]", "default"; "" when a check failed before
	// any rule was looked at (no caller identity, no policy).
	Name string
	// Reason explains the decision in a few words, for logs and errors:
	// "rule 3", "deny 0", "deny 0: path not canonical", "default deny",
	// "default allow", "no caller identity", "no authorization policy".
	Reason string
}

// RuleList names the list of rules a [Decision.Rule] indexes.
type RuleList uint8

const (
	// ListNone: no rule decided (Rule is -1).
	ListNone RuleList = iota
	// ListRules: Rule indexes [policy.Authorization.Rules].
	ListRules
	// ListDeny: Rule indexes [policy.Authorization.Deny].
	ListDeny
)

// String returns "rules", "deny", or "" for ListNone.
func (l RuleList) String() string {
	switch l {
	case ListRules:
		return "rules"
	case ListDeny:
		return "deny"
	}
	return ""
}

// Reasons and names of decisions that no rule made.
const (
	reasonNoPolicy     = "no authorization policy"
	reasonNoCaller     = "no caller identity"
	reasonCallerNoSvc  = "caller ID names no service"
	reasonDefaultAllow = "default allow"
	reasonDefaultDeny  = "default deny"
	nameDefault        = "default"
)

// Authorizer decides which callers may call a service, by caller service
// name, HTTP method and path prefix. It is the compiled, immutable form of a
// [policy.Authorization]: build one per policy version with [NewAuthorizer]
// and swap it whole. It is safe for concurrent use.
//
// Authorize takes no lock and does not allocate: the rules are indexed by
// caller name at compile time, so a call looks at the rules naming its
// caller or "*" only.
//
// It denies on error: a nil *Authorizer denies everything, and so does an
// empty caller name.
type Authorizer struct {
	allowDefault  bool
	audit         bool
	defaultReason string
	allow         ruleSet // the rules: the first that matches allows
	deny          ruleSet // the deny list, looked at first: the first that matches denies
}

// ruleSet is one compiled list of rules, indexed by caller.
type ruleSet struct {
	rules     []authRule
	byCaller  map[string][]int32 // rules naming the caller or "*", in order
	anyCaller []int32            // rules naming "*", in order
}

// forCaller returns the indexes of the rules that apply to caller, in order.
func (s *ruleSet) forCaller(caller string) []int32 {
	if list, ok := s.byCaller[caller]; ok {
		return list
	}
	return s.anyCaller
}

// authRule is one compiled rule.
type authRule struct {
	paths     []string // path prefixes; nil matches any path
	anyMethod bool     // the rule names no method
	methods   uint16   // bit set of the standard methods it names (methodBit)
	others    []string // upper-case non-standard methods it names
	reason    string   // "rule <i>", "deny <i>"
	unclean   string   // a deny rule's reason for a path that is not canonical
	name      string   // "rules[<i>]", "deny[<i>]"
}

// methodBit returns the bit of a standard HTTP method, 0 for any other.
func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "DELETE":
		return 1 << 4
	case "PATCH":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "CONNECT":
		return 1 << 7
	case "TRACE":
		return 1 << 8
	}
	return 0
}

// allows reports whether the rule names method, whose methodBit is bit.
func (r *authRule) allows(method string, bit uint16) bool {
	if r.anyMethod || r.methods&bit != 0 {
		return true
	}
	return bit == 0 && r.others != nil && slices.Contains(r.others, method)
}

// NewAuthorizer compiles a. The deny list is tried first, in order: the
// first deny rule that matches denies the call, whatever the rules allow.
// Then the rules are tried in order and the first that matches allows the
// call; when none does, a.Default decides: "allow" allows, "deny", "" and
// any other value deny. A rule (allow or deny) matches when its From names
// the caller or is "*" (a rule without From matches nobody), one of its
// Paths covers the request path (no Paths: any path), and one of its
// Methods equals the request method (no Methods: any method; the policy's
// methods are compared in upper case, the request's as they are).
//
// A rule path covers itself and everything below it, at a segment boundary:
// "/charge" covers "/charge" and "/charge/x", never "/chargeback"; a rule
// path ending in "/" covers what starts with it. Paths are compared once
// decoded, as the application sees them, and are case-sensitive, as URL
// paths are: "/ADMIN" is not "/admin". A path that is not canonical (see
// [CanonicalPath]: "..", ".", "//", encoded slashes or dots, backslashes)
// names no resource one can be sure of, so:
//
//   - a deny rule with Paths whose From and Methods match the call denies a
//     path that is not canonical, since it may name a denied path:
//     "/x/../admin" cannot pass a deny on "/admin";
//   - an allow rule with Paths never matches it, so that "/public/../admin"
//     or "/public%2F..%2Fadmin" cannot pass as "/public".
//
// Rules without Paths, allow or deny, apply to every path, canonical or
// not: their decision does not depend on it.
//
// a.Mode "audit" makes [Authorizer.Audit] report true; the decisions are
// the same as under "enforce" ("" and any other value).
//
// NewAuthorizer copies what it needs; a may be reused.
func NewAuthorizer(a policy.Authorization) *Authorizer {
	z := &Authorizer{
		allowDefault:  a.Default == "allow",
		audit:         a.Mode == policy.AuthzAudit,
		defaultReason: reasonDefaultDeny,
		allow:         compileRules(a.Rules, "rule ", "rules"),
		deny:          compileRules(a.Deny, "deny ", "deny"),
	}
	if z.allowDefault {
		z.defaultReason = reasonDefaultAllow
	}
	for i := range z.deny.rules {
		z.deny.rules[i].unclean = z.deny.rules[i].reason + ": path not canonical"
	}
	return z
}

// compileRules compiles one list of rules, whose reasons are reason and
// the index, and names list[index].
func compileRules(rules []policy.Rule, reason, list string) ruleSet {
	s := ruleSet{rules: make([]authRule, len(rules)), byCaller: make(map[string][]int32)}
	for i, r := range rules {
		cr := authRule{reason: reason + strconv.Itoa(i), name: list + "[" + strconv.Itoa(i) + "]"}
		if len(r.Paths) > 0 { // empty means any path: keep nil
			cr.paths = slices.Clone(r.Paths)
		}
		cr.anyMethod = len(r.Methods) == 0
		for _, m := range r.Methods {
			m = strings.ToUpper(m)
			if bit := methodBit(m); bit != 0 {
				cr.methods |= bit
			} else {
				cr.others = append(cr.others, m)
			}
		}
		s.rules[i] = cr
	}
	// Index: a caller's list holds the rules naming it and the "*" rules,
	// in rule order, each once.
	named := make(map[string][]bool)
	anyRule := make([]bool, len(rules))
	for i, r := range rules {
		for _, from := range r.From {
			if from == "*" {
				anyRule[i] = true
				continue
			}
			if from == "" {
				continue
			}
			if named[from] == nil {
				named[from] = make([]bool, len(rules))
			}
			named[from][i] = true
		}
	}
	for i, ok := range anyRule {
		if ok {
			s.anyCaller = append(s.anyCaller, int32(i))
		}
	}
	for caller, mine := range named {
		var list []int32
		for i := range rules {
			if mine[i] || anyRule[i] {
				list = append(list, int32(i))
			}
		}
		s.byCaller[caller] = list
	}
	return s
}

// Audit reports whether the authorization is in mode audit: its decisions
// are to be logged and counted, and the calls let through, denied or not.
// A nil Authorizer is not.
func (z *Authorizer) Audit() bool { return z != nil && z.audit }

// Authorize decides whether caller (the calling service's name, from its
// verified SPIFFE ID) may call method on path, the request path as the
// client spelled it, percent-escapes kept (for HTTP the request URL's
// RawPath, or its EscapedPath when RawPath is empty; for gRPC the full
// method). It never allocates unless the path holds an escape, and is safe
// for concurrent use. A nil Authorizer or an empty caller is denied with
// Rule -1. The decision is the same in mode audit: acting on it is the
// caller's business.
func (z *Authorizer) Authorize(caller, method, path string) Decision {
	if z == nil {
		return Decision{Rule: -1, Reason: reasonNoPolicy}
	}
	if caller == "" {
		return Decision{Rule: -1, Reason: reasonNoCaller}
	}
	bit := methodBit(method)
	p := lazyPath{raw: path}
	for _, i := range z.deny.forCaller(caller) {
		r := &z.deny.rules[i]
		if !r.allows(method, bit) {
			continue
		}
		if r.paths != nil {
			decoded, clean := p.canonical()
			if !clean {
				return Decision{Rule: int(i), List: ListDeny, Name: r.name, Reason: r.unclean}
			}
			if !coversAny(r.paths, decoded) {
				continue
			}
		}
		return Decision{Rule: int(i), List: ListDeny, Name: r.name, Reason: r.reason}
	}
	for _, i := range z.allow.forCaller(caller) {
		r := &z.allow.rules[i]
		if !r.allows(method, bit) {
			continue
		}
		if r.paths != nil {
			if decoded, clean := p.canonical(); !clean || !coversAny(r.paths, decoded) {
				continue
			}
		}
		return Decision{Allow: true, Rule: int(i), List: ListRules, Name: r.name, Reason: r.reason}
	}
	return Decision{Allow: z.allowDefault, Rule: -1, Name: nameDefault, Reason: z.defaultReason}
}

// lazyPath is a request path made canonical once, when a rule first needs
// it.
type lazyPath struct {
	raw, decoded string
	known, clean bool
}

// canonical returns CanonicalPath(p.raw).
func (p *lazyPath) canonical() (string, bool) {
	if !p.known {
		p.decoded, p.clean = CanonicalPath(p.raw)
		p.known = true
	}
	return p.decoded, p.clean
}

// AuthorizeID is Authorize for the service the verified peer ID names
// ([ID.Service]); an ID that names no service is denied with Rule -1.
func (z *Authorizer) AuthorizeID(caller ID, method, path string) Decision {
	svc, ok := caller.Service()
	if !ok {
		if caller.IsZero() {
			return Decision{Rule: -1, Reason: reasonNoCaller}
		}
		return Decision{Rule: -1, Reason: reasonCallerNoSvc}
	}
	return z.Authorize(svc, method, path)
}

// coversAny reports whether one of the rule paths covers path.
func coversAny(prefixes []string, path string) bool {
	for _, p := range prefixes {
		if covers(p, path) {
			return true
		}
	}
	return false
}

// covers reports whether the rule path prefix covers path: path is prefix,
// or lies below it at a segment boundary ("/charge" covers "/charge/x",
// not "/chargeback"; "/charge/" covers "/charge/x").
func covers(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// CanonicalPath returns the path an application sees for escaped, a
// request path as the client spelled it (percent-escapes kept), and
// whether that spelling is canonical: it starts with "/", has no ".", ".."
// or empty segment ("//"; a trailing "/" is fine), no backslash, no escaped
// "/", "." or "\" (%2F, %2E, %5C in either case) and no malformed escape.
// Layers that resolve such paths differently (a router that cleans them, one
// that splits on encoded slashes, a file server that takes "\" for "/") would
// see another resource than the one authorized, so every decision that
// depends on the path denies a path that is not canonical; authorization
// in this package shares this one definition.
//
// The returned path is percent-decoded; it is escaped itself, and no
// allocation happens, when escaped holds no escape. It is "" when escaped
// is not canonical.
func CanonicalPath(escaped string) (string, bool) {
	if escaped == "" || escaped[0] != '/' {
		return "", false
	}
	escapes := false
	seg := 1 // start of the current segment
	for i := 1; i <= len(escaped); i++ {
		if i == len(escaped) || escaped[i] == '/' {
			switch escaped[seg:i] {
			case ".", "..":
				return "", false
			case "":
				if i < len(escaped) {
					return "", false // "//"
				}
			}
			seg = i + 1
			continue
		}
		switch escaped[i] {
		case '\\':
			return "", false
		case '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", false
			}
			switch unhex(escaped[i+1])<<4 | unhex(escaped[i+2]) {
			case '/', '.', '\\':
				return "", false
			}
			escapes = true
			i += 2
		}
	}
	if !escapes {
		return escaped, true
	}
	path, err := url.PathUnescape(escaped)
	if err != nil {
		return "", false
	}
	return path, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
