package mesh

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// AdminHandler serves the mesh's diagnostics, at paths relative to where it
// is mounted (strip the prefix). The index is a page a person reads when
// the client asks for HTML (a browser does), and JSON otherwise or with
// ?format=json; every other path is JSON, and the same JSON in a page with
// ?format=html:
//
//	/           the policy version and source, when it was applied, the
//	            rejected updates with their reasons, the endpoints and their
//	            ejection, the breakers, the concurrency limits, the faults
//	            and the audit mode in force, the certificate's expiry, and a
//	            form that explains a call
//	/config     the policy in force: version, hash, source, the document,
//	            the effective settings per service, and the last rejection
//	/endpoints  every destination's endpoints, subsets and ejection state
//	/breakers   every circuit breaker and its state
//	/protections the protections in force: per destination its
//	            concurrency limit (live), breaker, hedging and fault
//	            injection per route; this service's own rate limit and
//	            authorization mode; every active fault listed apart
//	/certs      this workload's identity: SPIFFE ID, serial, expiry, trust roots
//	/explain    ?url=...&method=...&header=k:v (repeatable): what Explain says;
//	            url=grpc://billing/billing.Billing/Charge (or the header
//	            content-type:application/grpc) explains an RPC; &caller=NAME
//	            explains the authorization service NAME would meet
//	            (ExplainAs; default: this mesh's service)
//	/metrics    the application's metrics handler (WithMetricsHandler), such
//	            as Prometheus text; without one, 404 and how to enable it
//
// Every answer carries a strict Content-Security-Policy; the page loads
// only its own style sheet and runs no script. Mount it on an internal
// listener: it shows the fleet's topology.
func (m *Mesh) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config", m.htmlOr("config", m.adminConfig))
	mux.HandleFunc("GET /endpoints", m.htmlOr("endpoints", m.adminEndpoints))
	mux.HandleFunc("GET /breakers", m.htmlOr("breakers", m.adminBreakers))
	mux.HandleFunc("GET /protections", m.htmlOr("protections", m.adminProtections))
	mux.HandleFunc("GET /explain", m.htmlOr("explain", m.adminExplain))
	mux.HandleFunc("GET /certs", m.htmlOr("certs", m.adminCerts))
	mux.HandleFunc("GET /metrics", m.adminMetrics)
	mux.HandleFunc("GET /admin.css", serveAdminCSS)
	mux.HandleFunc("GET /{$}", m.adminIndex)
	return adminHeaders(mux)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if _, ok := w.(*bufferedResponse); ok {
		// For a page, which escapes the text itself: < stays <.
		enc.SetEscapeHTML(false)
	}
	_ = enc.Encode(v)
}

func (m *Mesh) adminIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Vary", "Accept")
	if wantsHTML(r) {
		m.adminIndexHTML(w, r)
		return
	}
	index := map[string]any{
		"service": m.cfg.service,
		"paths":   []string{"config", "endpoints", "breakers", "protections", "certs", "explain?url=...&method=...&header=k:v", "explain?url=grpc://<service>/<package.Service>/<Method>", "metrics"},
	}
	// Fault injection in force is said on the first page, so that nobody
	// runs it unnoticed.
	st := m.state.Load()
	if faults := activeFaults(m.viewServices(st)); len(faults) > 0 {
		index["faults_active"] = faults
	}
	// So is an authorization that only audits.
	if self := st.policy.Services[m.cfg.service]; self != nil && self.HasAuthorization && self.Authorization.Mode == policy.AuthzAudit {
		index["authorization_audit"] = "mode audit: denials are logged and counted, every call goes through"
	}
	writeJSON(w, http.StatusOK, index)
}

// ConfigView is what /config serves.
type ConfigView struct {
	Service         string                             `json:"service"`
	Version         string                             `json:"version"`
	Hash            string                             `json:"hash"`
	Source          string                             `json:"source"`
	Loaded          time.Time                          `json:"loaded"`
	UpdatesApplied  int64                              `json:"updates_applied"`
	UpdatesRejected int64                              `json:"updates_rejected"`
	LastRejection   *rejection                         `json:"last_rejection,omitempty"`
	Document        *policy.Document                   `json:"document"`
	Effective       map[string]*policy.ResolvedService `json:"effective"`
	Endpoints       string                             `json:"endpoints_source"`
}

func (m *Mesh) adminConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, m.configView())
}

// configView is what /config serves.
func (m *Mesh) configView() ConfigView {
	st := m.state.Load()
	return ConfigView{
		Service:         m.cfg.service,
		Version:         st.policy.Version,
		Hash:            st.policy.Hash,
		Source:          st.policy.Source,
		Loaded:          st.policy.Loaded,
		UpdatesApplied:  m.updates.Load(),
		UpdatesRejected: m.rejects.Load(),
		LastRejection:   m.rejection.Load(),
		Document:        st.policy.Doc,
		Effective:       st.policy.Services,
		Endpoints:       st.endpoints.Source,
	}
}

// ServiceEndpoints is one destination on /endpoints.
type ServiceEndpoints struct {
	Service   string          `json:"service"`
	Source    string          `json:"source"`
	Endpoints []EndpointState `json:"endpoints"`
}

func (m *Mesh) adminEndpoints(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, m.endpointsView())
}

// endpointsView is what /endpoints serves.
func (m *Mesh) endpointsView() []ServiceEndpoints {
	st := m.state.Load()
	services := m.viewServices(st)
	now := m.clock.Now()
	out := make([]ServiceEndpoints, 0, len(services))
	for _, name := range slices.Sorted(maps.Keys(services)) {
		d := services[name]
		var pools []*core.Pool
		for _, rt := range d.Routes {
			if rt.All != nil {
				pools = append(pools, rt.All)
			}
			for _, e := range rt.Split {
				if e.Pool.Service == name {
					pools = append(pools, e.Pool)
				}
				for _, fp := range e.Failover {
					if fp.Service == name {
						pools = append(pools, fp)
					}
				}
			}
		}
		hs := hostStates(name, pools, now)
		for i := range hs {
			slices.Sort(hs[i].Subsets)
			hs[i].Subsets = slices.Compact(hs[i].Subsets)
		}
		out = append(out, ServiceEndpoints{Service: name, Source: st.endpoints.Source, Endpoints: hs})
	}
	return out
}

// BreakerState is one circuit breaker on /breakers.
type BreakerState struct {
	Service string `json:"service"`
	Route   string `json:"route,omitempty"` // set for a route that overrides the service's breaker
	State   string `json:"state"`           // closed, open, half-open
	// Form is consecutive_failures or failure_rate. For a closed rate
	// breaker, Calls and Failures are what its window holds now.
	Form     string                 `json:"form"`
	Config   *policy.CircuitBreaker `json:"config"`
	Calls    int                    `json:"window_calls,omitempty"`
	Failures int                    `json:"window_failures,omitempty"`
}

func (m *Mesh) adminBreakers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, m.breakersView())
}

// breakersView is what /breakers serves.
func (m *Mesh) breakersView() []BreakerState {
	services := m.viewServices(m.state.Load())
	out := []BreakerState{}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		d := services[name]
		if d.Breaker != nil && len(d.Routes) > 0 {
			// The service's breaker is its routes' unless they override it:
			// the first route that shares it has the service's config.
			for _, rt := range d.Routes {
				if rt.Breaker == d.Breaker {
					out = append(out, breakerState(name, "", d.Breaker, rt.Eff.CircuitBreaker))
					break
				}
			}
		}
		for _, rt := range d.Routes {
			if rt.Breaker != nil && rt.Breaker != d.Breaker {
				out = append(out, breakerState(name, rt.Name, rt.Breaker, rt.Eff.CircuitBreaker))
			}
		}
	}
	return out
}

// breakerState is breaker b of service (route "" for the service's own)
// with its configuration cfg.
func breakerState(service, route string, b *resilience.Breaker, cfg *policy.CircuitBreaker) BreakerState {
	bs := BreakerState{Service: service, Route: route, State: b.State(), Form: "consecutive_failures", Config: cfg}
	if cfg != nil && cfg.FailureRate > 0 {
		bs.Form = "failure_rate"
		bs.Calls, bs.Failures = b.Window()
	}
	return bs
}

// Protections is what /protections serves.
type Protections struct {
	Service string `json:"service"`
	// Inbound: what this service's own mesh enforces on its callers.
	RateLimit         *policy.RateLimit `json:"rate_limit,omitempty"`
	AuthorizationMode string            `json:"authorization_mode,omitempty"` // enforce or audit
	Deny              []policy.Rule     `json:"deny,omitempty"`
	// Outbound: per destination, and every fault in force.
	Destinations []DestinationProtections `json:"destinations"`
	Faults       []FaultState             `json:"faults"`
}

// DestinationProtections is one destination on /protections.
type DestinationProtections struct {
	Service     string                 `json:"service"`
	Concurrency *ConcurrencyState      `json:"concurrency,omitempty"`
	Breaker     *policy.CircuitBreaker `json:"circuit_breaker,omitempty"`
	BreakerNow  string                 `json:"breaker_state,omitempty"`
	Routes      []RouteProtections     `json:"routes,omitempty"` // the routes that hedge or inject faults
}

// RouteProtections is a route's hedging and fault injection.
type RouteProtections struct {
	Route string        `json:"route"`
	Hedge *policy.Hedge `json:"hedge,omitempty"`
	Fault *policy.Fault `json:"fault,omitempty"`
}

// FaultState is a fault injection in force toward a route.
type FaultState struct {
	Service string        `json:"service"`
	Route   string        `json:"route"`
	Fault   *policy.Fault `json:"fault"`
}

func (m *Mesh) adminProtections(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, m.protectionsView())
}

// protectionsView is what /protections serves.
func (m *Mesh) protectionsView() Protections {
	st := m.state.Load()
	services := m.viewServices(st)
	out := Protections{Service: m.cfg.service, Destinations: []DestinationProtections{}, Faults: activeFaults(services)}
	if self := st.policy.Services[m.cfg.service]; self != nil {
		out.RateLimit = self.RateLimit
		if self.HasAuthorization {
			out.AuthorizationMode = self.Authorization.Mode
			out.Deny = self.Authorization.Deny
		}
	}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		d, rs := services[name], st.policy.Services[name]
		if rs == nil {
			continue
		}
		dp := DestinationProtections{Service: name, Concurrency: concurrencyState(d, rs.Concurrency), Breaker: rs.Effective.CircuitBreaker}
		if d.Breaker != nil {
			dp.BreakerNow = d.Breaker.State()
		}
		for _, rt := range d.Routes {
			if rt.Eff.Hedge != nil || rt.Eff.Fault != nil {
				dp.Routes = append(dp.Routes, RouteProtections{Route: rt.Name, Hedge: rt.Eff.Hedge, Fault: rt.Eff.Fault})
			}
		}
		if dp.Concurrency != nil || dp.Breaker != nil || len(dp.Routes) > 0 {
			out.Destinations = append(out.Destinations, dp)
		}
	}
	return out
}

// activeFaults lists the routes of services that inject faults, by
// service and route.
func activeFaults(services map[string]*core.Destination) []FaultState {
	out := []FaultState{}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		for _, rt := range services[name].Routes {
			if rt.Eff.Fault != nil {
				out = append(out, FaultState{Service: name, Route: rt.Name, Fault: rt.Eff.Fault})
			}
		}
	}
	return out
}

func (m *Mesh) adminExplain(w http.ResponseWriter, r *http.Request) {
	req, err := explainRequest(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ex, err := m.ExplainAs(req, r.URL.Query().Get("caller"))
	if ex == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

// explainRequest builds the request /explain describes from its query.
func explainRequest(q url.Values) (*http.Request, error) {
	raw := q.Get("url")
	if raw == "" {
		return nil, fmt.Errorf("explain: the url parameter is required, e.g. ?url=http://billing/charge&method=POST&header=x-canary:true")
	}
	method := strings.ToUpper(q.Get("method"))
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("explain: url: %w", err)
	}
	for _, h := range q["header"] {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("explain: header %q: want name:value", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return req, nil
}

// viewServices returns the destinations of every service of st's policy,
// for the admin pages: those st compiled, and for the others (no call
// needed them yet) what a call would compile now (core.Preview), which
// is not kept.
func (m *Mesh) viewServices(st *state) map[string]*core.Destination {
	if len(st.services) == len(st.policy.Services) {
		return st.services
	}
	out := make(map[string]*core.Destination, len(st.policy.Services))
	for name := range st.policy.Services {
		d := st.services[name]
		if d == nil {
			d = core.Preview(&m.env, st.policy, st.endpoints, name)
		}
		out[name] = d
	}
	return out
}
