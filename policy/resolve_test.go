package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func snapshotOf(t *testing.T, yaml string) *Snapshot {
	t.Helper()
	snap, err := NewSnapshot(mustParse(t, yaml), "test")
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestResolveDesignDocument(t *testing.T) {
	doc := mustParse(t, string(readTestdata(t, "design.yaml")))
	snap, err := NewSnapshot(doc, "file:design.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != "2026-11-26.1" || snap.Source != "file:design.yaml" {
		t.Errorf("version %q source %q", snap.Version, snap.Source)
	}
	b := snap.Service("billing")
	if b == nil {
		t.Fatal("no billing")
	}
	want := Effective{
		Timeout:            2 * time.Second,
		Attempts:           3,
		PerTryTimeout:      500 * time.Millisecond,
		BackoffInitial:     25 * time.Millisecond,
		BackoffMax:         250 * time.Millisecond,
		RetryOn:            []string{"connect-failure", "reset", "502", "503", "504", "unavailable"},
		BudgetRatio:        0.2,
		BudgetMinPerSecond: 10,
		CircuitBreaker:     &CircuitBreaker{ConsecutiveFailures: 5, OpenFor: Duration(30 * time.Second), HalfOpenRequests: 1},
		OutlierDetection:   &OutlierDetection{ConsecutiveFailures: 5, BaseEjection: Duration(30 * time.Second), MaxEjectionPercent: 50},
		LoadBalancer:       "round_robin",
		TLS:                "strict",
	}
	if !reflect.DeepEqual(b.Effective, want) {
		t.Errorf("billing effective:\n got %+v\nwant %+v", b.Effective, want)
	}
	if !b.HasRoutes || len(b.Routes) != 3 {
		t.Fatalf("routes = %+v", b.Routes)
	}
	names := []string{b.Routes[0].Name, b.Routes[1].Name, b.Routes[2].Name}
	if !reflect.DeepEqual(names, []string{"canary-by-header", "charge", "default"}) {
		t.Errorf("route names = %q", names)
	}
	charge := b.Routes[1]
	wantCharge := want
	wantCharge.Timeout = time.Second
	if !reflect.DeepEqual(charge.Effective, wantCharge) {
		t.Errorf("charge effective:\n got %+v\nwant %+v", charge.Effective, wantCharge)
	}
	if !reflect.DeepEqual(charge.Match, Match{PathPrefix: "/charge", Methods: []string{"POST"}}) {
		t.Errorf("charge match = %+v", charge.Match)
	}
	if !reflect.DeepEqual(charge.Split, []WeightedSubset{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}) {
		t.Errorf("charge split = %+v", charge.Split)
	}
	if b.Routes[0].Match.Headers["x-canary"] != "true" {
		t.Errorf("canary match = %+v", b.Routes[0].Match)
	}
	if len(b.Endpoints) != 2 || b.Endpoints[1].Address != "127.0.0.1:9002" || b.Endpoints[1].Labels["version"] != "v2" {
		t.Errorf("endpoints = %+v", b.Endpoints)
	}
	if !reflect.DeepEqual(b.Subsets, map[string]map[string]string{"v1": {"version": "v1"}, "v2": {"version": "v2"}}) {
		t.Errorf("subsets = %+v", b.Subsets)
	}
	wantAuthz := Authorization{Default: "deny", Rules: []Rule{
		{From: []string{"enrollment", "progress"}, Paths: []string{"/charge"}, Methods: []string{"POST"}},
		{From: []string{"admin"}},
	}, Mode: AuthzEnforce}
	if !reflect.DeepEqual(b.Authorization, wantAuthz) || !b.HasAuthorization {
		t.Errorf("authorization = %+v, has %v", b.Authorization, b.HasAuthorization)
	}
}

func TestResolve(t *testing.T) {
	defaultEffective := Effective{
		Attempts:           1,
		BackoffInitial:     25 * time.Millisecond,
		BackoffMax:         250 * time.Millisecond,
		BudgetRatio:        0.2,
		BudgetMinPerSecond: 10,
		LoadBalancer:       "round_robin",
	}
	with := func(f func(e *Effective)) Effective {
		e := defaultEffective
		f(&e)
		return e
	}
	tests := []struct {
		name  string
		in    string
		route int // index of the route to check, -1 for the service level
		want  Effective
	}{
		{"nothing set", "services: {b: {}}", -1, defaultEffective},
		{"defaults merge", "defaults: {timeout: 5s, retry: {attempts: 2}}\nservices: {b: {load_balancer: random}}", -1, with(func(e *Effective) {
			e.Timeout = 5 * time.Second
			e.Attempts = 2
			e.RetryOn = DefaultRetryOn()
			e.LoadBalancer = "random"
		})},
		{"service over defaults, field-wise", "defaults: {timeout: 5s, retry: {attempts: 2, per_try_timeout: 1s}}\nservices: {b: {timeout: 2s, retry: {attempts: 4}}}", -1, with(func(e *Effective) {
			e.Timeout = 2 * time.Second
			e.Attempts = 4
			e.PerTryTimeout = time.Second
			e.RetryOn = DefaultRetryOn()
		})},
		{"route overrides", "defaults: {timeout: 5s}\nservices: {b: {timeout: 2s, retry: {attempts: 3, backoff: {initial: 10ms}}, routes: [{}, {timeout: 1s, retry: {backoff: {max: 1s}}, tls: disable}]}}", 1, with(func(e *Effective) {
			e.Timeout = time.Second
			e.Attempts = 3
			e.RetryOn = DefaultRetryOn()
			e.BackoffInitial = 10 * time.Millisecond
			e.BackoffMax = time.Second
			e.TLS = "disable"
		})},
		{"route without overrides inherits", "services: {b: {timeout: 2s, routes: [{}, {timeout: 1s}]}}", 0, with(func(e *Effective) {
			e.Timeout = 2 * time.Second
		})},
		{"explicit zero budget", "defaults: {retry: {budget: {ratio: 0.5, min_per_second: 5}}}\nservices: {b: {retry: {budget: {ratio: 0}}}}", -1, with(func(e *Effective) {
			e.BudgetRatio = 0
			e.BudgetMinPerSecond = 5
		})},
		{"explicit zero min per second", "services: {b: {retry: {budget: {min_per_second: 0}}}}", -1, with(func(e *Effective) {
			e.BudgetMinPerSecond = 0
		})},
		{"non_idempotent false over true", "defaults: {retry: {non_idempotent: true}}\nservices: {b: {retry: {non_idempotent: false}}}", -1, defaultEffective},
		{"non_idempotent inherited", "defaults: {retry: {non_idempotent: true}}\nservices: {b: {retry: {attempts: 1}}}", -1, with(func(e *Effective) {
			e.NonIdempotent = true
		})},
		{"non_idempotent false in route", "services: {b: {retry: {non_idempotent: true}, routes: [{retry: {non_idempotent: false}}]}}", 0, defaultEffective},
		{"retry_on explicit empty", "services: {b: {retry: {attempts: 3, retry_on: []}}}", -1, with(func(e *Effective) {
			e.Attempts = 3
			e.RetryOn = []string{}
		})},
		{"retry_on explicit empty over defaults", "defaults: {retry: {retry_on: [reset]}}\nservices: {b: {retry: {attempts: 2, retry_on: []}}}", -1, with(func(e *Effective) {
			e.Attempts = 2
			e.RetryOn = []string{}
		})},
		{"retry_on from defaults", "defaults: {retry: {retry_on: [reset]}}\nservices: {b: {retry: {attempts: 2}}}", -1, with(func(e *Effective) {
			e.Attempts = 2
			e.RetryOn = []string{"reset"}
		})},
		{"retry_on kept without retries", "services: {b: {retry: {retry_on: [reset]}}}", -1, with(func(e *Effective) {
			e.RetryOn = []string{"reset"}
		})},
		{"backoff initial alone", "services: {b: {retry: {backoff: {initial: 1s}}}}", -1, with(func(e *Effective) {
			e.BackoffInitial = time.Second
			e.BackoffMax = time.Second
		})},
		{"breaker defaults", "services: {b: {circuit_breaker: {}}}", -1, with(func(e *Effective) {
			e.CircuitBreaker = &CircuitBreaker{ConsecutiveFailures: 5, OpenFor: Duration(30 * time.Second), HalfOpenRequests: 1}
		})},
		{"breaker merged", "defaults: {circuit_breaker: {open_for: 10s}}\nservices: {b: {routes: [{circuit_breaker: {consecutive_failures: 3}}]}}", 0, with(func(e *Effective) {
			e.CircuitBreaker = &CircuitBreaker{ConsecutiveFailures: 3, OpenFor: Duration(10 * time.Second), HalfOpenRequests: 1}
		})},
		{"outlier defaults", "services: {b: {outlier_detection: {consecutive_failures: 2}}}", -1, with(func(e *Effective) {
			e.OutlierDetection = &OutlierDetection{ConsecutiveFailures: 2, BaseEjection: Duration(30 * time.Second), MaxEjectionPercent: 10}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshotOf(t, tt.in).Service("b")
			got := s.Effective
			if tt.route >= 0 {
				got = s.Routes[tt.route].Effective
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("effective:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestResolveImplicitRoute(t *testing.T) {
	s := snapshotOf(t, "services: {b: {timeout: 2s}}").Service("b")
	if s.HasRoutes || len(s.Routes) != 1 {
		t.Fatalf("routes = %+v, has %v", s.Routes, s.HasRoutes)
	}
	r := s.Routes[0]
	if r.Name != "" || len(r.Split) != 0 || !reflect.DeepEqual(r.Match, Match{}) || !reflect.DeepEqual(r.Effective, s.Effective) {
		t.Errorf("implicit route = %+v", r)
	}
	if s.Authorization.Default != "deny" || s.Authorization.Rules != nil || s.HasAuthorization {
		t.Errorf("authorization = %+v, has %v", s.Authorization, s.HasAuthorization)
	}
}

func TestResolveReplaceAndMerge(t *testing.T) {
	snap := snapshotOf(t, `
defaults:
  endpoints: [{address: "d:1"}]
  subsets: {v1: {version: v1}, v2: {version: v2}}
  routes: [{name: from-defaults, match: {methods: [get]}}]
  authorization: {default: allow}
services:
  plain: {}
  own:
    endpoints: [{address: "o:1", labels: {track: canary, version: v3}}] # a subset must select a static endpoint
    subsets: {v2: {track: canary}, v3: {version: v3}}
    routes: [{}, {name: two, match: {methods: [post, Put]}}]
    authorization: {rules: [{from: [a], methods: [get]}]}
`)
	plain := snap.Service("plain")
	if len(plain.Endpoints) != 1 || plain.Endpoints[0].Address != "d:1" {
		t.Errorf("plain endpoints = %+v", plain.Endpoints)
	}
	if !plain.HasRoutes || len(plain.Routes) != 1 || plain.Routes[0].Name != "from-defaults" ||
		!reflect.DeepEqual(plain.Routes[0].Match.Methods, []string{"GET"}) {
		t.Errorf("plain routes = %+v", plain.Routes)
	}
	if plain.Authorization.Default != "allow" {
		t.Errorf("plain authorization = %+v", plain.Authorization)
	}

	own := snap.Service("own")
	if len(own.Endpoints) != 1 || own.Endpoints[0].Address != "o:1" {
		t.Errorf("own endpoints = %+v", own.Endpoints)
	}
	wantSubsets := map[string]map[string]string{"v1": {"version": "v1"}, "v2": {"track": "canary"}, "v3": {"version": "v3"}}
	if !reflect.DeepEqual(own.Subsets, wantSubsets) {
		t.Errorf("own subsets = %+v", own.Subsets)
	}
	if len(own.Routes) != 2 || own.Routes[0].Name != "route[0]" || own.Routes[1].Name != "two" ||
		!reflect.DeepEqual(own.Routes[1].Match.Methods, []string{"POST", "PUT"}) {
		t.Errorf("own routes = %+v", own.Routes)
	}
	wantAuthz := Authorization{Default: "deny", Rules: []Rule{{From: []string{"a"}, Methods: []string{"GET"}}}, Mode: AuthzEnforce}
	if !reflect.DeepEqual(own.Authorization, wantAuthz) {
		t.Errorf("own authorization = %+v", own.Authorization)
	}
	// The document keeps what was written.
	if m := snap.Doc.Services["own"].Routes[1].Match.Methods; !reflect.DeepEqual(m, []string{"post", "Put"}) {
		t.Errorf("document methods changed to %q", m)
	}
}

func TestResolveDoesNotMutateOrShare(t *testing.T) {
	doc := mustParse(t, string(readTestdata(t, "design.yaml")))
	before, _ := Hash(doc)
	snap, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := Hash(doc); after != before {
		t.Fatal("NewSnapshot changed the document")
	}
	// Changing the caller's document afterwards does not reach the snapshot.
	b := doc.Services["billing"]
	b.Timeout = Duration(time.Hour)
	b.Retry.RetryOn[0] = "changed"
	b.Subsets["v1"]["version"] = "changed"
	b.Endpoints[0].Labels["version"] = "changed"
	b.Routes[1].Match.Methods[0] = "GET"
	b.Authorization.Rules[0].From[0] = "changed"
	*b.Retry.NonIdempotent = true
	doc.Services["new"] = &Service{}
	if h, _ := Hash(snap.Doc); h != snap.Hash {
		t.Error("changing the input document changed the snapshot's document")
	}
	s := snap.Service("billing")
	if s.Effective.Timeout != 2*time.Second || s.Effective.RetryOn[0] != "connect-failure" ||
		s.Subsets["v1"]["version"] != "v1" || s.Endpoints[0].Labels["version"] != "v1" ||
		s.Routes[1].Match.Methods[0] != "POST" || s.Authorization.Rules[0].From[0] != "enrollment" ||
		s.Effective.NonIdempotent || snap.Service("new") != nil {
		t.Errorf("changing the input document changed the resolved view: %+v", s)
	}
}

func TestEffectiveJSON(t *testing.T) {
	s := snapshotOf(t, "services: {b: {timeout: 2s, retry: {attempts: 3, per_try_timeout: 500ms}, circuit_breaker: {}}}").Service("b")
	got, err := json.Marshal(s.Effective)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"timeout":"2s","attempts":3,"per_try_timeout":"500ms","backoff_initial":"25ms","backoff_max":"250ms",` +
		`"retry_on":["connect-failure","reset","502","503","504","unavailable"],"budget_ratio":0.2,"budget_min_per_second":10,` +
		`"non_idempotent":false,"circuit_breaker":{"consecutive_failures":5,"open_for":"30s","half_open_requests":1},"load_balancer":"round_robin"}`
	if string(got) != want {
		t.Errorf("JSON:\n got %s\nwant %s", got, want)
	}
	// Inside a resolved service too (the admin page renders those).
	all, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(all, &back); err != nil {
		t.Fatal(err)
	}
	if eff := back["effective"].(map[string]any); eff["timeout"] != "2s" {
		t.Errorf("service JSON effective = %v", eff)
	}
	// No retries, no list: retry_on renders as [].
	got, _ = json.Marshal(Effective{Attempts: 1})
	if want := `"retry_on":[]`; !json.Valid(got) || !strings.Contains(string(got), want) {
		t.Errorf("JSON %s lacks %s", got, want)
	}
}

func TestDefaultRetryOnIsACopy(t *testing.T) {
	a := DefaultRetryOn()
	a[0] = "changed"
	if DefaultRetryOn()[0] != "connect-failure" {
		t.Error("DefaultRetryOn shares its slice")
	}
}

func TestResolveAuthorizationDenyAndMode(t *testing.T) {
	snap := snapshotOf(t, `
services:
  plain: {}
  audited:
    authorization:
      mode: audit
      rules: [{from: [a], methods: [get]}]
      deny: [{from: ["*"], paths: [/admin], methods: [delete, Post]}, {from: [b]}]
`)
	if a := snap.Service("plain").Authorization; a.Mode != AuthzEnforce || a.Deny != nil {
		t.Errorf("plain authorization = %+v, want mode enforce and no deny list", a)
	}
	want := Authorization{Default: "deny", Mode: AuthzAudit,
		Rules: []Rule{{From: []string{"a"}, Methods: []string{"GET"}}},
		Deny:  []Rule{{From: []string{"*"}, Paths: []string{"/admin"}, Methods: []string{"DELETE", "POST"}}, {From: []string{"b"}}}}
	if got := snap.Service("audited").Authorization; !reflect.DeepEqual(got, want) {
		t.Errorf("audited authorization:\n got %+v\nwant %+v", got, want)
	}
	// The document keeps what was written.
	if m := snap.Doc.Services["audited"].Authorization.Deny[0].Methods; !reflect.DeepEqual(m, []string{"delete", "Post"}) {
		t.Errorf("document deny methods changed to %q", m)
	}
}

func TestResolveSplitTargets(t *testing.T) {
	doc, err := Parse([]byte(`
services:
  a: {subsets: {v1: {version: v1}}}
  b:
    connect_timeout: 250ms
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - {name: own, match: {path_prefix: /own}, split: [{subset: v1, weight: 1}]}
      - {name: mixed, split: [{subset: v1, weight: 1, failover: [{subset: v2}, {service: a}]}, {service: a, subset: v1, weight: 1}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	b := snap.Services["b"]
	if got := b.Routes[0].Split; !reflect.DeepEqual(got, []WeightedSubset{{Subset: "v1", Weight: 1}}) {
		t.Errorf("own split = %+v, want the document's", got)
	}
	want := []WeightedSubset{
		{Service: "b", Subset: "v1", Weight: 1, Failover: []Target{{Service: "b", Subset: "v2"}, {Service: "a"}}},
		{Service: "a", Subset: "v1", Weight: 1},
	}
	if got := b.Routes[1].Split; !reflect.DeepEqual(got, want) {
		t.Errorf("mixed split = %+v, want %+v", got, want)
	}
	if doc.Services["b"].Routes[1].Split[0].Service != "" {
		t.Error("resolving modified the document")
	}
	if got := b.Routes[1].Effective.ConnectTimeout; got != 250*time.Millisecond {
		t.Errorf("connect timeout = %v, want 250ms", got)
	}
}
