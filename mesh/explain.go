package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/policy"
)

// WeightedSubset is one entry of a route's split.
type WeightedSubset = policy.WeightedSubset

// Explanation says what the mesh would do with a request, without sending
// it: the route that matches, the split, the endpoints the route may use,
// the deadlines and retries, the breaker's state and the TLS mode, under
// which policy version; with the routes tried before the one that matched
// and the reason of each decision (Reasons). Its JSON writes every
// duration as a Go duration string ("250ms").
type Explanation struct {
	Service     string           `json:"service"`
	Protocol    string           `json:"protocol"`              // http, or grpc for a request explained as an RPC
	Passthrough bool             `json:"passthrough,omitempty"` // the host is no service of the policy: sent untouched
	Egress      string           `json:"egress,omitempty"`      // for a host that is no service: the policy's egress, allow or deny
	Route       string           `json:"route"`
	Split       []WeightedSubset `json:"split"`
	// Targets are the split's entries with the service and subset each
	// calls, its failover targets, and their endpoints available now.
	Targets       []SplitTarget   `json:"targets,omitempty"`
	Endpoints     []string        `json:"endpoints"` // host:port, " (ejected)" appended to ejected ones
	Hosts         []EndpointState `json:"hosts"`     // the same endpoints with their subsets and live state
	Timeout       time.Duration   `json:"timeout"`   // whole call; 0 means only the caller's context
	PerTryTimeout time.Duration   `json:"per_try_timeout"`
	Attempts      int             `json:"attempts"` // for this request: 1 when its method or body forbids retries (never for an RPC)
	RetryOn       []string        `json:"retry_on"`
	LoadBalancer  string          `json:"load_balancer"`
	Breaker       string          `json:"breaker"` // closed, open or half-open; closed when no breaker is configured (see HasBreaker)
	HasBreaker    bool            `json:"has_breaker"`
	TLS           string          `json:"tls"` // strict or disable
	// The protections in force for this request (nil when off): this
	// process's concurrency limit toward the service, the route's hedging
	// and fault injection, and the rate limit the service's own mesh puts
	// on its callers.
	Concurrency *ConcurrencyState `json:"concurrency,omitempty"`
	Hedge       *policy.Hedge     `json:"hedge,omitempty"`
	Fault       *policy.Fault     `json:"fault,omitempty"`
	RateLimit   *policy.RateLimit `json:"rate_limit,omitempty"`
	// Hash is the consistent hashing of a ring_hash or maglev route, with
	// what this request hashes; nil for the other load balancers.
	Hash *HashExplanation `json:"hash,omitempty"`
	// Authorization is what the destination's authorization block, as
	// this policy has it, decides for this caller: "allowed by rules[0]",
	// "denied by deny[0] (deny 0)", with " (mode audit: logged, let
	// through)" under audit. "" when a control plane decides instead (with
	// Consul, its intentions).
	Authorization string `json:"authorization,omitempty"`
	// Caller is the service the authorization is explained for (this
	// mesh's own unless ExplainAs names another); AuthorizationRule the
	// rule that decided ("rules[0]", "deny[1]", "default") and
	// AuthorizationMode the block's mode (enforce or audit). All three
	// are "" when Authorization is.
	Caller            string `json:"caller,omitempty"`
	AuthorizationRule string `json:"authorization_rule,omitempty"`
	AuthorizationMode string `json:"authorization_mode,omitempty"`
	// Routes are the routes of the service tried in order, each with why
	// it did not match, up to and including the one that matched
	// (reason "first match"); all of them when none matched.
	Routes []RouteDecision `json:"routes,omitempty"`
	// Match is the matched route's conditions, as the policy spells them
	// (methods upper case, header condition names lower case); nil when
	// it has none.
	Match *policy.Match `json:"match,omitempty"`
	// PrefixRewrite and RequestHeaders are the matched route's actions on
	// the request it sends, as the policy spells them (header names lower
	// case); empty when it has none. PrefixRewrite is the path the request
	// is sent with (its matched prefix replaced), and is "" for an RPC,
	// whose method is never rewritten.
	PrefixRewrite  string                 `json:"prefix_rewrite,omitempty"`
	RewrittenPath  string                 `json:"rewritten_path,omitempty"`
	RequestHeaders *policy.HeaderMutation `json:"request_headers,omitempty"`
	// BreakerDetail is the route's circuit breaker as /breakers shows it
	// (form, state, a rate breaker's window counts); nil without one.
	BreakerDetail *BreakerState `json:"breaker_detail,omitempty"`
	// OutlierDetection is the route's outlier detection, defaults filled
	// in (nil: none); Hosts says which endpoints it ejected, until when.
	OutlierDetection *policy.OutlierDetection `json:"outlier_detection,omitempty"`
	// Reasons says why each decision above is what it is, and where in
	// the policy document its setting came from.
	Reasons Reasons `json:"reasons"`
	// Provenance maps each part of the service's policy that the control
	// plane's own configuration decided to what decided it (with Consul,
	// a config entry: {"split": "service-splitter/billing"}); nil: the
	// policy document alone.
	Provenance    map[string]string `json:"provenance,omitempty"`
	PolicyVersion string            `json:"policy_version"`
	Layer         Layer             `json:"layer,omitempty"` // set when the mesh would fail the request
	Error         string            `json:"error,omitempty"`
}

// explanationJSON is an Explanation as JSON: its fields, with the
// durations shadowed by policy.Duration, which writes and reads them as Go
// duration strings ("250ms") rather than nanoseconds.
type explanationJSON struct {
	plainExplanation
	Timeout       policy.Duration `json:"timeout"`
	PerTryTimeout policy.Duration `json:"per_try_timeout"`
}

// plainExplanation has Explanation's fields without its JSON methods.
type plainExplanation Explanation

// MarshalJSON writes e with its durations as Go duration strings.
func (e Explanation) MarshalJSON() ([]byte, error) {
	return json.Marshal(explanationJSON{plainExplanation(e), policy.Duration(e.Timeout), policy.Duration(e.PerTryTimeout)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Explanation) UnmarshalJSON(b []byte) error {
	var v explanationJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Explanation(v.plainExplanation)
	e.Timeout, e.PerTryTimeout = v.Timeout.Std(), v.PerTryTimeout.Std()
	return nil
}

// ConcurrencyState is a concurrency limit toward a destination, as
// Explain and the admin handler show it: the policy's block and the
// limiter's live state.
type ConcurrencyState struct {
	Max      int                         `json:"max,omitempty"`      // the fixed limit
	Adaptive *policy.AdaptiveConcurrency `json:"adaptive,omitempty"` // the bounds of a learned limit
	MaxWait  policy.Duration             `json:"max_wait"`           // how long a call may queue; 0: refused at once
	Limit    int                         `json:"limit"`              // the limit now (for adaptive, what it learned)
	InFlight int                         `json:"in_flight"`          // attempts holding a slot now
	Waiting  int                         `json:"waiting"`            // calls queued for a slot now
	Shed     int64                       `json:"shed"`               // attempts refused so far (layer overload)
	// Reason says where the block came from and what it does now; Explain
	// sets it.
	Reason string `json:"reason,omitempty"`
}

// RouteDecision is one route Explain tried: whether it matched the
// request and, when it did not, the first of its conditions that failed
// ("path /refund does not start with /charge", "method GET not in [POST]",
// `header x-canary: want "true", got none`). The request's own text in a
// reason is bounded and sanitized.
type RouteDecision struct {
	Name    string `json:"name"` // "" for the implicit route of a service without routes
	Matched bool   `json:"matched"`
	Reason  string `json:"reason"`
}

// Reasons are the reasons of an Explanation's decisions, each a short
// sentence that starts with the value decided and names the level of the
// policy document that set it: "1s: timeout of route charge", "2s:
// timeout of the defaults", "none: only the caller's context", "1: POST
// is not idempotent and the route does not say non_idempotent (...)", "3:
// retry.attempts of service billing". A field is "" when the mesh did not
// get to that decision.
type Reasons struct {
	Split         string `json:"split,omitempty"`
	Timeout       string `json:"timeout,omitempty"`
	PerTryTimeout string `json:"per_try_timeout,omitempty"`
	Attempts      string `json:"attempts,omitempty"`
	LoadBalancer  string `json:"load_balancer,omitempty"`
	Breaker       string `json:"breaker,omitempty"`
	Outlier       string `json:"outlier,omitempty"`
	Concurrency   string `json:"concurrency,omitempty"`
	Hedge         string `json:"hedge,omitempty"`
	Fault         string `json:"fault,omitempty"`
	TLS           string `json:"tls,omitempty"`
	Authorization string `json:"authorization,omitempty"`
}

// EndpointState is one endpoint as the admin page and Explain show it.
type EndpointState struct {
	Address      string            `json:"address"`
	Labels       map[string]string `json:"labels,omitempty"`
	Subsets      []string          `json:"subsets,omitempty"`
	Ejected      bool              `json:"ejected"`
	EjectedUntil *time.Time        `json:"ejected_until,omitempty"`
	InFlight     int64             `json:"in_flight"`
}

// Explain says what the mesh would do with req, without sending it. A
// request the mesh would fail before sending (no route, no endpoints, a
// known service without a valid policy, an outside host under egress: deny)
// returns the Explanation, filled as far as the mesh got, together with the
// *CallError the call would return. Explain does not modify req.
//
// A request whose Content-Type is application/grpc (or application/grpc+...)
// or whose URL scheme is "grpc" is explained as a gRPC call through
// meshgrpc.DialOptions: the URL path is the full method
// ("grpc://billing/billing.Billing/Charge"), the headers are its metadata,
// every RPC is retried up to the route's attempts, and TLS is the service's
// mode, which gRPC connections share.
//
// Explain(req) is ExplainAs(req, m.Service()).
func (m *Mesh) Explain(req *http.Request) (*Explanation, error) {
	return m.ExplainAs(req, m.cfg.service)
}

// ExplainAs is Explain with the authorization that caller, a service
// name, would meet at the destination ("" is this mesh's own service).
// Only the authorization depends on the caller.
func (m *Mesh) ExplainAs(req *http.Request, caller string) (*Explanation, error) {
	if caller == "" {
		caller = m.cfg.service
	}
	if req == nil || req.URL == nil {
		return nil, errors.New("mesh: Explain needs a request with a URL")
	}
	st := m.state.Load()
	name := core.ServiceOf(req.URL.Host)
	rpc := isRPC(req)
	ex := &Explanation{Service: name, Protocol: "http", PolicyVersion: st.policy.Version}
	if rpc {
		ex.Protocol = "grpc"
	}
	// A service no call needed yet is compiled, as its first call would.
	st, d := m.destination(st, name)
	if d == nil && m.findService(req.Context(), name) {
		// A service the control plane knows beyond the policy: explain
		// it as its call would find it.
		st, d = m.destination(m.state.Load(), name)
		ex.PolicyVersion = st.policy.Version
	}
	if d == nil {
		if _, known := st.policy.Rejected[name]; !known {
			ex.Egress = policy.EgressAllow
			if st.egressDeny {
				ex.Egress = policy.EgressDeny
			}
		}
		if ce := st.outside(name); ce != nil {
			ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
			return ex, ce
		}
		ex.Passthrough = true
		return ex, nil
	}
	creq := httpRequest(req)
	if rpc {
		creq = core.Request{Path: req.URL.Path, Method: http.MethodPost, Header: rpcMetadata(req.Header), RPC: true,
			Replayable: true, Idempotent: true}
	}
	rt := d.Lookup(&creq)
	rs := st.policy.Services[name]
	ex.Routes = routeDecisions(d, &creq)
	if rt == nil {
		what := req.Method + " " + req.URL.Path
		if rpc {
			what = "RPC " + req.URL.Path
		}
		ce := &CallError{Layer: LayerRoute, Service: name, PolicyVersion: st.policy.Version,
			Err: fmt.Errorf("no route of service %q matches %s", name, what)}
		ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
		return ex, ce
	}
	eff := rt.Eff
	ex.Route = rt.Name
	ex.Timeout = eff.Timeout
	ex.PerTryTimeout = eff.PerTryTimeout
	ex.Attempts = rt.MaxAttempts(&creq)
	if eff.Attempts > 1 {
		ex.RetryOn = eff.RetryOn
	}
	ex.LoadBalancer = eff.LoadBalancer
	ex.TLS = core.TLSMode(eff)
	if rpc {
		ex.TLS = d.TLS
	}
	explainActions(ex, resolvedRoute(d, rs, rt), rt, req.URL, rpc)
	if rs != nil {
		ex.Concurrency = concurrencyState(d, rs.Concurrency)
		ex.RateLimit = rs.RateLimit
		ex.Provenance = rs.Provenance
		ex.Caller = caller
		if _, local := m.plane.(*localPlane); local {
			explainAuthz(ex, rs, &creq, req, caller)
		} else {
			ex.Reasons.Authorization = "decided by the control plane (with Consul, its intentions), not by this policy"
		}
	}
	ex.Hedge, ex.Fault = eff.Hedge, eff.Fault
	// Without a breaker the circuit is, in effect, always closed.
	ex.Breaker = "closed"
	if rt.Breaker != nil {
		ex.HasBreaker = true
		ex.Breaker = rt.Breaker.State()
		scope := ""
		if rt.Breaker != d.Breaker {
			scope = rt.Name
		}
		bs := breakerState(name, scope, rt.Breaker, eff.CircuitBreaker)
		ex.BreakerDetail = &bs
	}
	ex.OutlierDetection = eff.OutlierDetection
	now := m.clock.Now()
	var pools []*core.Pool
	if len(rt.Split) == 0 {
		pools = []*core.Pool{rt.All}
	}
	for _, e := range rt.Split {
		ws := WeightedSubset{Service: e.Pool.TargetOf(name).Service, Subset: e.Subset, Weight: e.Weight}
		for _, fp := range e.Failover {
			ws.Failover = append(ws.Failover, fp.TargetOf(name))
		}
		ex.Split = append(ex.Split, ws)
		if e.Weight > 0 {
			pools = append(pools, e.Pool)
			pools = append(pools, e.Failover...)
		}
	}
	ex.Targets = splitTargets(rt, now)
	ex.Hosts = hostStates(name, pools, now)
	for _, h := range ex.Hosts {
		if h.Ejected {
			ex.Endpoints = append(ex.Endpoints, h.Address+" (ejected)")
		} else {
			ex.Endpoints = append(ex.Endpoints, h.Address)
		}
	}
	explainReasons(ex, st.policy.Doc, d, rt, &creq, pools, now)
	if len(ex.Hosts) == 0 {
		ce := &CallError{Layer: LayerDiscovery, Service: name, Route: rt.Name, PolicyVersion: st.policy.Version,
			Err: core.NoEndpoints(name, "")}
		ex.Layer, ex.Error = ce.Layer, ce.Err.Error()
		return ex, ce
	}
	return ex, nil
}

// explainAuthz sets what the authorization block of rs decides for
// caller calling creq (req as sent: its path as spelled): ex's
// Authorization, the rule that decided, the mode and the reason.
func explainAuthz(ex *Explanation, rs *policy.ResolvedService, creq *core.Request, req *http.Request, caller string) {
	if !rs.HasAuthorization {
		ex.Authorization = "no authorization block: every caller of the trust domain"
		ex.Reasons.Authorization = "caller " + caller + ": allowed, neither the service nor the defaults have an authorization block"
		return
	}
	path := req.URL.EscapedPath()
	if req.URL.RawPath != "" {
		path = req.URL.RawPath
	}
	method := creq.Method
	if method == "" {
		method = http.MethodGet
	}
	az := identity.NewAuthorizer(rs.Authorization)
	d := az.Authorize(caller, method, path)
	out := "allowed by " + d.Name
	if !d.Allow {
		out = "denied by " + d.Name + " (" + d.Reason + ")"
		if az.Audit() {
			out += " (mode audit: logged, let through)"
		}
	}
	ex.Authorization = out
	ex.AuthorizationRule = d.Name
	ex.AuthorizationMode = rs.Authorization.Mode
	ex.Reasons.Authorization = fmt.Sprintf("caller %s, %s %s: %s, mode %s", caller, method, core.PeerText(path), out, rs.Authorization.Mode)
}

// concurrencyState is the concurrency limit c of d, nil when c is.
func concurrencyState(d *core.Destination, c *policy.Concurrency) *ConcurrencyState {
	if c == nil {
		return nil
	}
	cs := &ConcurrencyState{Max: c.Max, Adaptive: c.Adaptive, MaxWait: c.MaxWait}
	if l := d.Limiter; l != nil {
		cs.Limit, cs.InFlight, cs.Waiting = l.Limit(), l.InFlight(), l.Waiting()
	}
	cs.Shed = d.Shed.Load()
	return cs
}

// hostStates lists the hosts of pools once each, in address order, with the
// subsets that hold them.
func hostStates(service string, pools []*core.Pool, now time.Time) []EndpointState {
	idx := map[*discovery.Host]int{}
	var out []EndpointState
	for _, p := range pools {
		for _, h := range p.Hosts {
			i, ok := idx[h]
			if !ok {
				i = len(out)
				idx[h] = i
				out = append(out, hostState(h, now))
			}
			if l := hostLabel(service, p); l != "" {
				out[i].Subsets = append(out[i].Subsets, l)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func hostState(h *discovery.Host, now time.Time) EndpointState {
	s := EndpointState{Address: h.Address, Labels: h.Labels, InFlight: h.InFlight()}
	if hh := core.Health(h); hh != nil && !hh.Available(now) {
		s.Ejected = true
		until := hh.EjectedUntil()
		s.EjectedUntil = &until
	}
	return s
}

// routeDecisions lists the routes of d tried for creq, in order, up to
// and including the first that matches.
func routeDecisions(d *core.Destination, creq *core.Request) []RouteDecision {
	if !d.HasRoutes {
		return []RouteDecision{{Matched: true, Reason: "no routes: the service's implicit route takes every request"}}
	}
	out := make([]RouteDecision, 0, len(d.Routes))
	for _, rt := range d.Routes {
		rd := RouteDecision{Name: rt.Name, Reason: rt.Match.Why(creq)}
		if rd.Reason == "" {
			rd.Matched, rd.Reason = true, "first match"
			return append(out, rd)
		}
		out = append(out, rd)
	}
	return out
}

// resolvedRoute is the resolved form of rt, a route of d, in rs (d's
// resolved service), or nil: d's routes are rs's, compiled in order.
func resolvedRoute(d *core.Destination, rs *policy.ResolvedService, rt *core.Route) *policy.ResolvedRoute {
	if rs == nil || rt == nil {
		return nil
	}
	i := slices.Index(d.Routes, rt)
	if i < 0 || i >= len(rs.Routes) || rs.Routes[i].Name != rt.Name {
		return nil
	}
	return &rs.Routes[i]
}

// isZeroMatch reports whether m has no condition.
func isZeroMatch(m *policy.Match) bool {
	return len(m.Headers) == 0 && m.PathPrefix == "" && m.PathExact == "" && m.PathRegex == "" &&
		len(m.Header) == 0 && len(m.QueryParam) == 0 && len(m.Methods) == 0
}

// explainActions sets the actions of the matched route rt (rr resolved)
// on the request u names: the rewrite and the path sent (HTTP only), and
// the header changes.
func explainActions(ex *Explanation, rr *policy.ResolvedRoute, rt *core.Route, u *url.URL, rpc bool) {
	if rr != nil {
		ex.RequestHeaders = rr.RequestHeaders
		if !isZeroMatch(&rr.Match) {
			ex.Match = &rr.Match
		}
	}
	if rt.Rewrite == nil || rpc {
		return
	}
	ex.PrefixRewrite = rt.Rewrite.To
	if path, raw, ok := rewritePath(u, rt.Rewrite); ok {
		v := url.URL{Path: path, RawPath: raw}
		ex.RewrittenPath = v.EscapedPath()
	}
}

// level is one level of the policy document that may set a route's
// settings, as reasons name it: "route charge", "service billing", "the
// defaults".
type level struct {
	name string
	s    *policy.Settings
}

// settingLevels returns the levels of doc that set the settings of route
// rt of service d, most specific first. The resolved view keeps no
// provenance, so it is read again from the document, as policy resolves
// it: the service's routes, or the defaults' when it has none.
func settingLevels(doc *policy.Document, d *core.Destination, rt *core.Route) (route, service, defaults level) {
	route.name, service.name, defaults.name = "route "+rt.Name, "service "+d.Name, "the defaults"
	if doc == nil {
		return route, service, defaults
	}
	svc, def := doc.Services[d.Name], doc.Defaults
	if def != nil {
		defaults.s = &def.Settings
	}
	if svc != nil {
		service.s = &svc.Settings
	}
	if !d.HasRoutes {
		return route, service, defaults
	}
	i := slices.Index(d.Routes, rt)
	switch {
	case svc != nil && len(svc.Routes) > 0:
		if i >= 0 && i < len(svc.Routes) {
			route.s = &svc.Routes[i].Settings
		}
	case def != nil && i >= 0 && i < len(def.Routes):
		route.name += " of the defaults"
		route.s = &def.Routes[i].Settings
	}
	return route, service, defaults
}

// setBy returns the name of the first of levels that sets a field (set
// reports whether a level's settings do), or "".
func setBy(set func(*policy.Settings) bool, levels ...level) string {
	for _, l := range levels {
		if l.s != nil && set(l.s) {
			return l.name
		}
	}
	return ""
}

// explainReasons fills ex.Reasons (and the concurrency limit's reason)
// for route rt of d, which creq matched, from the document
// doc the policy in force was made of.
func explainReasons(ex *Explanation, doc *policy.Document, d *core.Destination, rt *core.Route, creq *core.Request, pools []*core.Pool, now time.Time) {
	r := &ex.Reasons
	eff := rt.Eff
	rl, sl, dl := settingLevels(doc, d, rt)
	all := []level{rl, sl, dl}
	retry := func(f func(*policy.Retry) bool) func(*policy.Settings) bool {
		return func(s *policy.Settings) bool { return s.Retry != nil && f(s.Retry) }
	}

	// Split.
	if len(rt.Split) == 0 {
		r.Split = "none: every endpoint of the service"
	} else {
		var parts, notes []string
		for _, e := range rt.Split {
			parts = append(parts, fmt.Sprintf("%s %d/%d", labelOr(e.Pool.Label), e.Weight, rt.Total))
			switch {
			case e.Weight == 0:
				notes = append(notes, entryName(d.Name, e)+" has weight 0: it gets no traffic")
			case len(e.Pool.Hosts) == 0:
				notes = append(notes, entryName(d.Name, e)+" selects no endpoint")
			}
		}
		notes = append(notes, splitNotes(d.Name, rt, now)...)
		r.Split = strings.Join(parts, ", ") + ": split of " + rl.name
		if len(notes) > 0 {
			r.Split += "; " + strings.Join(notes, "; ")
		}
	}

	// Deadlines.
	if src := setBy(func(s *policy.Settings) bool { return s.Timeout != 0 }, all...); src != "" {
		r.Timeout = fmt.Sprintf("%s: timeout of %s", eff.Timeout, src)
	} else {
		r.Timeout = "none: only the caller's context"
	}
	if src := setBy(retry(func(r *policy.Retry) bool { return r.PerTryTimeout != 0 }), all...); src != "" {
		r.PerTryTimeout = fmt.Sprintf("%s: retry.per_try_timeout of %s", eff.PerTryTimeout, src)
	} else {
		r.PerTryTimeout = "none: an attempt may take the whole timeout"
	}

	// Attempts, as Route.MaxAttempts decides them.
	attemptsSrc := setBy(retry(func(r *policy.Retry) bool { return r.Attempts != 0 }), all...)
	base := "1: no level sets retry.attempts"
	if attemptsSrc != "" {
		base = fmt.Sprintf("%d: retry.attempts of %s", eff.Attempts, attemptsSrc)
	}
	switch {
	case eff.Attempts > 1 && !creq.Replayable:
		r.Attempts = fmt.Sprintf("1: the body cannot be replayed (retry.attempts %d of %s)", eff.Attempts, attemptsSrc)
	case eff.Attempts > 1 && rt.IdempotentOnly && !creq.Idempotent:
		r.Attempts = fmt.Sprintf("1: %s is not idempotent and the route does not say non_idempotent (retry.attempts %d of %s)",
			core.PeerText(creq.Method), eff.Attempts, attemptsSrc)
	case eff.Attempts > 1 && !creq.Idempotent:
		src := setBy(retry(func(r *policy.Retry) bool { return r.NonIdempotent != nil }), all...)
		r.Attempts = fmt.Sprintf("%s; retry.non_idempotent of %s lets %s be retried", base, src, core.PeerText(creq.Method))
	default:
		r.Attempts = base
	}

	explainHash(ex, rt, creq, pools, all, now)

	// Breaker.
	if cb := eff.CircuitBreaker; cb == nil || rt.Breaker == nil {
		r.Breaker = "none: no level sets circuit_breaker"
	} else {
		form := fmt.Sprintf("consecutive_failures %d", cb.ConsecutiveFailures)
		if cb.FailureRate > 0 {
			calls, failures := rt.Breaker.Window()
			form = fmt.Sprintf("failure_rate %g over %s with min_calls %d (window now: %d calls, %d failed)",
				cb.FailureRate, cb.Window, cb.MinCalls, calls, failures)
		}
		src := setBy(func(s *policy.Settings) bool { return s.CircuitBreaker != nil }, all...)
		r.Breaker = fmt.Sprintf("%s: %s, open_for %s; circuit_breaker of %s", rt.Breaker.State(), form, cb.OpenFor, src)
		if rt.Breaker != d.Breaker {
			r.Breaker += " (the route's own breaker)"
		}
	}

	// Outlier detection, from the hosts Explain listed.
	if od := eff.OutlierDetection; od == nil {
		r.Outlier = "none: no level sets outlier_detection"
	} else {
		var ejected []string
		for _, h := range ex.Hosts {
			if h.Ejected && h.EjectedUntil != nil {
				ejected = append(ejected, fmt.Sprintf("%s until %s (%s from now)", h.Address,
					h.EjectedUntil.UTC().Format(time.RFC3339), h.EjectedUntil.Sub(now).Round(time.Millisecond)))
			}
		}
		state := "no endpoint ejected"
		if len(ejected) > 0 {
			state = fmt.Sprintf("%d of %d endpoints ejected: %s", len(ejected), len(ex.Hosts), strings.Join(ejected, ", "))
		}
		src := setBy(func(s *policy.Settings) bool { return s.OutlierDetection != nil }, sl, dl)
		r.Outlier = fmt.Sprintf("%s; consecutive_failures %d, base_ejection %s, max_ejection_percent %d; outlier_detection of %s",
			state, od.ConsecutiveFailures, od.BaseEjection, od.MaxEjectionPercent, src)
	}

	// Concurrency: a block of the service or the defaults.
	if c := ex.Concurrency; c == nil {
		r.Concurrency = "none: neither the service nor the defaults set concurrency"
	} else {
		src := "the defaults"
		if doc != nil && doc.Services[d.Name] != nil && doc.Services[d.Name].Concurrency != nil {
			src = sl.name
		}
		limit := fmt.Sprintf("max %d", c.Max)
		if a := c.Adaptive; a != nil {
			limit = fmt.Sprintf("adaptive %d..%d, learned %d", a.Min, a.Max, c.Limit)
		}
		wait := "refused at once when full"
		if c.MaxWait > 0 {
			wait = "queued up to " + c.MaxWait.String() + " when full"
		}
		c.Reason = fmt.Sprintf("%s, %s; now %d in flight, %d waiting, %d shed; concurrency of %s",
			limit, wait, c.InFlight, c.Waiting, c.Shed, src)
		r.Concurrency = c.Reason
	}

	// Hedge, and whether it applies to this request (as core hedges).
	if h := rt.Hedge; h == nil {
		r.Hedge = "none: no level sets hedge"
	} else {
		after := h.Delay.String()
		if eff.Hedge != nil && eff.Hedge.Quantile != "" {
			after = eff.Hedge.Quantile + " of the route's recent latency"
		}
		src := setBy(func(s *policy.Settings) bool { return s.Hedge != nil }, all...)
		r.Hedge = fmt.Sprintf("up to %d more attempt(s) after %s; hedge of %s", h.Max, after, src)
		switch {
		case !creq.Replayable:
			r.Hedge += "; not for this request: the body cannot be replayed"
		case !creq.Idempotent && !h.NonIdempotent:
			r.Hedge += "; not for this request: " + core.PeerText(creq.Method) + " is not idempotent and the hedge does not say non_idempotent"
		}
	}

	if f := eff.Fault; f == nil {
		r.Fault = "none: no level sets fault"
	} else {
		src := setBy(func(s *policy.Settings) bool { return s.Fault != nil }, all...)
		r.Fault = "injecting: fault of " + src
		if f.OnlyWithHeader != "" && rt.Fault != nil {
			if creq.Header != nil && len(creq.Header.Values(rt.Fault.OnlyWithHeader)) > 0 {
				r.Fault += "; only with header " + f.OnlyWithHeader + ", which this request has"
			} else {
				r.Fault = "not for this request: it lacks header " + f.OnlyWithHeader + " (fault of " + src + ")"
			}
		}
	}

	// TLS: an RPC takes the service's mode, which its connections share.
	tlsLevels, note := all, ""
	if creq.RPC {
		tlsLevels, note = []level{sl, dl}, " (an RPC takes the service's mode: gRPC connections are shared)"
	}
	if src := setBy(func(s *policy.Settings) bool { return s.TLS != "" }, tlsLevels...); src != "" {
		r.TLS = ex.TLS + ": tls of " + src + note
	} else {
		r.TLS = ex.TLS + ": the default, no level sets tls" + note
	}

	if ex.AuthorizationRule != "" {
		src := "the defaults"
		if doc != nil && doc.Services[d.Name] != nil && doc.Services[d.Name].Authorization != nil {
			src = sl.name
		}
		r.Authorization += "; authorization of " + src
	}
}
