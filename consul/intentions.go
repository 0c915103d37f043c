package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul/internal/blocking"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/mesh"
)

// Intentions is the compiled service-intentions config entry of one
// destination: who may call it, at L4 (allow or deny a caller) and L7 (path,
// method and header permissions), with Consul's precedence: the source that
// names the caller exactly wins over the wildcard "*"; within a source, the
// first permission that matches decides; a request no permission matches,
// and a caller no source names, gets the default (the agent's ACL default
// policy: allow when ACLs are off). Immutable and safe for concurrent use.
type Intentions struct {
	exact        map[string]*intentionSource
	wildcard     *intentionSource
	defaultAllow bool
	index        uint64 // ModifyIndex of the entry, for reasons
}

type intentionSource struct {
	name        string
	allow       bool // L4 action, when perms is empty
	perms       []intentionPermission
	l7          bool
	pathDepends bool // a permission has a path condition
	description string
}

type intentionPermission struct {
	allow      bool
	pathExact  string
	pathPrefix string
	pathRegex  *regexp.Regexp
	methods    []string
	headers    []headerMatch
}

type headerMatch struct {
	name                            string
	present                         bool
	exact, prefix, suffix, contains string
	regex                           *regexp.Regexp
	invert, ignoreCase              bool
}

// CompileIntentions compiles entry (nil: no entry) with the default
// decision for callers and requests it does not match. It fails on a regex
// that does not compile, naming the source and permission.
func CompileIntentions(entry *api.ServiceIntentionsConfigEntry, defaultAllow bool) (*Intentions, error) {
	in := &Intentions{exact: map[string]*intentionSource{}, defaultAllow: defaultAllow}
	if entry == nil {
		return in, nil
	}
	in.index = entry.ModifyIndex
	for si, src := range entry.Sources {
		if src == nil {
			continue
		}
		s := &intentionSource{name: src.Name, allow: src.Action == api.IntentionActionAllow, description: src.Description}
		for pi, p := range src.Permissions {
			if p == nil {
				continue
			}
			s.l7 = true
			cp := intentionPermission{allow: p.Action == api.IntentionActionAllow}
			if h := p.HTTP; h != nil {
				cp.pathExact, cp.pathPrefix = h.PathExact, h.PathPrefix
				s.pathDepends = s.pathDepends || h.PathExact != "" || h.PathPrefix != "" || h.PathRegex != ""
				if h.PathRegex != "" {
					re, err := regexp.Compile("^(?:" + h.PathRegex + ")$")
					if err != nil {
						return nil, fmt.Errorf("consul: intentions of %s: sources[%d].permissions[%d].http.path_regex: %w", entry.Name, si, pi, err)
					}
					cp.pathRegex = re
				}
				for _, m := range h.Methods {
					cp.methods = append(cp.methods, strings.ToUpper(m))
				}
				for hi, hp := range h.Header {
					hm := headerMatch{name: hp.Name, present: hp.Present, exact: hp.Exact, prefix: hp.Prefix,
						suffix: hp.Suffix, contains: hp.Contains, invert: hp.Invert, ignoreCase: hp.IgnoreCase}
					if hp.Regex != "" {
						re, err := regexp.Compile("^(?:" + hp.Regex + ")$")
						if err != nil {
							return nil, fmt.Errorf("consul: intentions of %s: sources[%d].permissions[%d].http.header[%d].regex: %w", entry.Name, si, pi, hi, err)
						}
						hm.regex = re
					}
					cp.headers = append(cp.headers, hm)
				}
			}
			s.perms = append(s.perms, cp)
		}
		if src.Name == "*" {
			in.wildcard = s
		} else {
			in.exact[src.Name] = s
		}
	}
	return in, nil
}

// Authorize decides whether caller may make a request with method and path;
// header returns every value of a request header, by name in any case (nil
// means none). An empty caller or a nil Intentions is denied.
//
// path is the request path as the client spelled it, percent-escapes kept,
// as for [identity.Authorizer.Authorize]. Path conditions see it decoded, and when a
// permission of the deciding source has a path condition, a path that is not
// canonical ([identity.CanonicalPath]) is denied outright: "/public/../admin" must not
// slip past a deny on "/admin". PathPrefix is a plain prefix, as in Consul.
//
// A header condition sees every value of a repeated header: in a deny
// permission it holds when it holds for any value, in an allow permission
// only when it holds for every value, so that no duplicate header turns a
// deny into an allow.
func (in *Intentions) Authorize(caller, method, path string, header func(string) []string) identity.Decision {
	if in == nil {
		return identity.Decision{Rule: -1, Reason: "no intentions loaded"}
	}
	if caller == "" {
		return identity.Decision{Rule: -1, Reason: "no caller identity"}
	}
	src := in.exact[caller]
	if src == nil {
		src = in.wildcard
	}
	if src == nil {
		return in.fallback(fmt.Sprintf("no intention names %q", caller))
	}
	if !src.l7 {
		return identity.Decision{Allow: src.allow, Rule: 0, Reason: fmt.Sprintf("intention %s -> %s", src.name, action(src.allow))}
	}
	if src.pathDepends {
		decoded, ok := identity.CanonicalPath(path)
		if !ok {
			return identity.Decision{Rule: -1, Reason: fmt.Sprintf("intention %s: path %q is not canonical -> deny", src.name, path)}
		}
		path = decoded
	}
	for i := range src.perms {
		p := &src.perms[i]
		if p.matches(method, path, header) {
			return identity.Decision{Allow: p.allow, Rule: i, Reason: fmt.Sprintf("intention %s permission %d -> %s", src.name, i, action(p.allow))}
		}
	}
	return in.fallback(fmt.Sprintf("no permission of intention %s matches %s %s", src.name, method, path))
}

func (in *Intentions) fallback(why string) identity.Decision {
	return identity.Decision{Allow: in.defaultAllow, Rule: -1, Reason: why + "; default " + action(in.defaultAllow)}
}

func action(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func (p *intentionPermission) matches(method, path string, header func(string) []string) bool {
	switch {
	case p.pathExact != "" && path != p.pathExact:
		return false
	case p.pathPrefix != "" && !strings.HasPrefix(path, p.pathPrefix):
		return false
	case p.pathRegex != nil && !p.pathRegex.MatchString(path):
		return false
	}
	if len(p.methods) > 0 && !slices.Contains(p.methods, method) {
		return false
	}
	for i := range p.headers {
		var vals []string
		if header != nil {
			vals = header(p.headers[i].name)
		}
		// A deny must not be dodged, an allow must not be borrowed: with
		// several values, a deny's condition needs one value, an allow's
		// needs them all.
		if !p.headers[i].matches(vals, !p.allow) {
			return false
		}
	}
	return true
}

// matches reports whether the condition holds for the values of its header:
// for any of them when anyValue is set, else for every one. Present, and
// any condition on a missing header, look at the header as a whole.
func (h *headerMatch) matches(vals []string, anyValue bool) bool {
	if h.present || len(vals) == 0 {
		return (h.present && len(vals) > 0) != h.invert
	}
	for _, v := range vals {
		if h.matchValue(v) != h.invert {
			if anyValue {
				return true
			}
		} else if !anyValue {
			return false
		}
	}
	return !anyValue
}

// matchValue reports whether one value meets the condition, before Invert.
func (h *headerMatch) matchValue(v string) bool {
	exact, prefix, suffix, contains := h.exact, h.prefix, h.suffix, h.contains
	if h.ignoreCase {
		v, exact, prefix, suffix, contains = strings.ToLower(v), strings.ToLower(exact), strings.ToLower(prefix), strings.ToLower(suffix), strings.ToLower(contains)
	}
	switch {
	case exact != "":
		return v == exact
	case prefix != "":
		return strings.HasPrefix(v, prefix)
	case suffix != "":
		return strings.HasSuffix(v, suffix)
	case contains != "":
		return strings.Contains(v, contains)
	case h.regex != nil:
		return h.regex.MatchString(v)
	}
	return false
}

// IntentionsSource watches the service-intentions config entry of one
// destination (this workload's own service) with a blocking query and keeps
// it compiled, so that a new deny applies to the next request, on open
// connections too. The default decision is the agent's ACL default policy.
// Safe for concurrent use; Close stops the watch.
type IntentionsSource struct {
	val  value[Intentions]
	last lastError
}

// NewIntentionsSource starts watching the intentions of service and returns
// once they are known, or ctx ends (then it stops and returns the error,
// with the last failure). The watch outlives ctx; Close stops it. A nil
// logger means slog.Default().
func NewIntentionsSource(ctx context.Context, client *api.Client, service string, logger *slog.Logger) (*IntentionsSource, error) {
	if client == nil {
		return nil, errNoClient
	}
	s := startIntentions(client, "", service, orDefault(logger))
	if err := s.val.await(ctx, "intentions of "+service, s.last.load); err != nil {
		return nil, err
	}
	return s, nil
}

// startIntentions starts the watch, with token ("": the Client's own), and
// returns at once: until the first answer, Current is nil and every caller
// is denied.
func startIntentions(client *api.Client, token, service string, logger *slog.Logger) *IntentionsSource {
	s := &IntentionsSource{}
	s.val.start()
	entries := client.ConfigEntries()
	var defaultAllow *bool
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			if defaultAllow == nil {
				allow, err := aclDefaultAllow(ctx, client, token)
				if err != nil {
					return blocking.Result{}, fmt.Errorf("reading the agent's ACL default policy: %w", err)
				}
				defaultAllow = &allow
			}
			q := query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}, token).WithContext(ctx)
			e, meta, err := entries.Get(api.ServiceIntentions, service, q)
			var entry *api.ServiceIntentionsConfigEntry
			switch {
			case err != nil && isNotFound(err):
				// No entry (Consul's default state): the default applies.
				// Consul's 404 carries the index to block on, but the
				// client drops it, and a query at a stale index returns
				// at once: the watch would spin. The list of entries
				// answers with the same index, and says whether ours
				// appeared meanwhile.
				entry, meta, err = listedIntentions(ctx, entries, token, service)
				if err != nil {
					return blocking.Result{}, err
				}
			case err != nil:
				return blocking.Result{}, err
			default:
				entry, _ = e.(*api.ServiceIntentionsConfigEntry)
			}
			in, cerr := CompileIntentions(entry, *defaultAllow)
			if cerr != nil {
				s.last.store(cerr)
				logger.Error("intentions rejected; the ones in force stay", "service", service, "err", cerr)
			} else {
				s.val.set(in)
			}
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			s.last.store(err)
			if failures == 1 || failures%10 == 0 {
				logger.Warn("consul intentions watch failed; the intentions in force stay",
					"service", service, "failures", failures, "retry_in", wait, "err", err)
			}
		},
	}
	s.val.run(func(ctx context.Context) { _ = loop.Run(ctx) })
	return s
}

// Current returns the intentions in force; nil before the first answer (a
// nil *Intentions denies every caller).
func (s *IntentionsSource) Current() *Intentions { return s.val.load() }

// Changed returns a channel closed at the next change of Current.
func (s *IntentionsSource) Changed() <-chan struct{} { return s.val.changed() }

// Authorize decides a request with the intentions in force (see
// [Intentions.Authorize]); before the first answer it denies.
func (s *IntentionsSource) Authorize(caller, method, path string, header func(string) []string) identity.Decision {
	return s.val.load().Authorize(caller, method, path, header)
}

// authorizeRequest is Authorize for a mesh's Handler and gRPC server.
func (s *IntentionsSource) authorizeRequest(caller, method, path string, header mesh.RequestHeader) identity.Decision {
	return s.val.load().Authorize(caller, method, path, header.Values)
}

// Close stops the watch and waits for it. It is safe to call twice.
func (s *IntentionsSource) Close() error {
	s.val.close()
	return nil
}

// listedIntentions reads the service-intentions entry of service from the
// list of all such entries (nil: none), with the list's query meta, whose
// index is the one a blocking read of the single entry waits on. It is the
// read after a 404, not a watch: the list changes with every entry, the
// single entry only with ours.
func listedIntentions(ctx context.Context, entries *api.ConfigEntries, token, service string) (*api.ServiceIntentionsConfigEntry, *api.QueryMeta, error) {
	e, meta, err := listedEntry(ctx, entries, token, api.ServiceIntentions, service)
	si, _ := e.(*api.ServiceIntentionsConfigEntry)
	return si, meta, err
}

// listedEntry reads the entry of kind and name from the list of all
// entries of kind (nil: none), with the list's query meta: see
// listedIntentions.
func listedEntry(ctx context.Context, entries *api.ConfigEntries, token, kind, name string) (api.ConfigEntry, *api.QueryMeta, error) {
	list, meta, err := entries.List(kind, query(&api.QueryOptions{AllowStale: true}, token).WithContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	for _, e := range list {
		if e.GetName() == name {
			return e, meta, nil
		}
	}
	return nil, meta, nil
}

func isNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == 404
	}
	return strings.Contains(err.Error(), "404")
}

// aclDefaultAllow reads the agent's ACL default policy: allow when ACLs
// are off, as Consul itself decides unmatched intentions then. Reading it
// takes agent read, which a least-privilege token need not have: a 403
// means ACLs are on and the token was refused, and it is taken for the
// default deny (with default allow, a token is refused only by a rule that
// denies, rare for agent read; deny is the safe side of the doubt).
func aclDefaultAllow(ctx context.Context, client *api.Client, token string) (bool, error) {
	// Agent().Self takes no context; the raw query does, so a frozen agent
	// cannot hold Close.
	var self map[string]map[string]any
	if _, err := client.Raw().Query("/v1/agent/self", &self, query(&api.QueryOptions{}, token).WithContext(ctx)); err != nil {
		if isForbidden(err) {
			return false, nil
		}
		return false, err
	}
	dbg := self["DebugConfig"]
	if enabled, ok := dbg["ACLsEnabled"].(bool); ok && !enabled {
		return true, nil
	}
	if rs, ok := dbg["ACLResolverSettings"].(map[string]any); ok {
		if p, ok := rs["ACLDefaultPolicy"].(string); ok {
			return p == "allow", nil
		}
	}
	// ACLs on and the policy unknown: deny on doubt.
	return false, ctx.Err()
}
