package policy

import (
	"testing"
	"time"
)

// TestValidateProtection: the protection blocks' field rules, each problem
// named by its path.
func TestValidateProtection(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // exactly these problems, in this order; nil: valid
	}{
		// circuit_breaker, both forms.
		{"rate breaker", "services: {b: {circuit_breaker: {failure_rate: 0.5, window: 10s, min_calls: 20, open_for: 5s, half_open_requests: 3}}}", nil},
		{"rate breaker alone", "services: {b: {circuit_breaker: {failure_rate: 1}}}", nil},
		{"rate breaker rate 0 written", "services: {b: {circuit_breaker: {failure_rate: 1.5}}}", []string{"services.b.circuit_breaker.failure_rate: must be in (0, 1], got 1.5"}},
		{"rate breaker negative", "services: {b: {circuit_breaker: {failure_rate: -0.1}}}", []string{"services.b.circuit_breaker.failure_rate: must be in (0, 1], got -0.1"}},
		{"both forms", "services: {b: {circuit_breaker: {failure_rate: 0.5, consecutive_failures: 5}}}", []string{"services.b.circuit_breaker: set consecutive_failures or failure_rate, not both: they are two kinds of breaker"}},
		{"window without rate", "services: {b: {circuit_breaker: {consecutive_failures: 5, window: 1s, min_calls: 3}}}", []string{
			"services.b.circuit_breaker.window: applies only with failure_rate",
			"services.b.circuit_breaker.min_calls: applies only with failure_rate",
		}},
		{"min_calls 0", "services: {b: {circuit_breaker: {failure_rate: 0.5, min_calls: 0}}}", []string{"services.b.circuit_breaker.min_calls: must be 1..1000000"}},
		{"window too long", "services: {b: {circuit_breaker: {failure_rate: 0.5, window: 2h}}}", []string{"services.b.circuit_breaker.window: must be at most 1h, got 2h0m0s"}},

		// concurrency.
		{"concurrency max", "services: {b: {concurrency: {max: 100, max_wait: 25ms}}}", nil},
		{"concurrency adaptive", "services: {b: {concurrency: {adaptive: {min: 2, initial: 20, max: 500}}}}", nil},
		{"concurrency adaptive empty", "services: {b: {concurrency: {adaptive: {}}}}", nil},
		{"concurrency empty", "services: {b: {concurrency: {max_wait: 1s}}}", []string{"services.b.concurrency: set max (a fixed limit) or adaptive (a learned one)"}},
		{"concurrency both", "services: {b: {concurrency: {max: 5, adaptive: {max: 9}}}}", []string{"services.b.concurrency: set max or adaptive, not both"}},
		{"concurrency max 0", "services: {b: {concurrency: {max: 0}}}", []string{"services.b.concurrency.max: must be 1..1000000"}},
		{"concurrency adaptive bounds", "services: {b: {concurrency: {adaptive: {min: 0, max: 2000000}}}}", []string{
			"services.b.concurrency.adaptive.min: must be 1..1000000",
			"services.b.concurrency.adaptive.max: must be 1..1000000",
		}},
		{"concurrency adaptive min over max", "services: {b: {concurrency: {adaptive: {min: 10, max: 5}}}}", []string{"services.b.concurrency.adaptive.max: must be at least min (10), got 5"}},
		{"concurrency adaptive initial out", "services: {b: {concurrency: {adaptive: {min: 10, initial: 5, max: 50}}}}", []string{"services.b.concurrency.adaptive.initial: must be within min..max"}},
		{"concurrency max_wait negative", "services: {b: {concurrency: {max: 1, max_wait: -1s}}}", []string{"services.b.concurrency.max_wait: must be > 0, got -1s"}},
		{"concurrency in defaults", "defaults: {concurrency: {max: 10}}", nil},

		// hedge.
		{"hedge delay", "services: {b: {hedge: {delay: 50ms, max: 2}}}", nil},
		{"hedge quantile", "services: {b: {hedge: {quantile: p95}, routes: [{name: r, hedge: {quantile: p99.9, non_idempotent: true}}]}}", nil},
		{"hedge neither", "services: {b: {hedge: {max: 1}}}", []string{"services.b.hedge: set delay (a fixed wait) or quantile (such as p95 of the route's recent latency)"}},
		{"hedge both", "services: {b: {hedge: {delay: 5ms, quantile: p90}}}", []string{"services.b.hedge: set delay or quantile, not both"}},
		{"hedge quantile bad", "services: {b: {routes: [{hedge: {quantile: 95}}]}}", []string{`services.b.routes[0].hedge.quantile: must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got "95"`}},
		{"hedge quantile low", "services: {b: {hedge: {quantile: p10}}}", []string{`services.b.hedge.quantile: must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got "p10"`}},
		{"hedge quantile 100", "services: {b: {hedge: {quantile: p100}}}", []string{`services.b.hedge.quantile: must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got "p100"`}},
		{"hedge quantile exponent", "services: {b: {hedge: {quantile: p9e1}}}", []string{`services.b.hedge.quantile: must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got "p9e1"`}},
		{"hedge max", "services: {b: {hedge: {delay: 1ms, max: 6}}}", []string{"services.b.hedge.max: must be 1..5"}},
		{"hedge max 0", "services: {b: {hedge: {delay: 1ms, max: 0}}}", []string{"services.b.hedge.max: must be 1..5"}},

		// rate_limit.
		{"rate limit", "services: {b: {rate_limit: {requests_per_second: 100, burst: 200, per_caller: true, overrides: {enrollment: 500}}}}", nil},
		{"rate limit fractional", "services: {b: {rate_limit: {requests_per_second: 0.5}}}", nil},
		{"rate limit no rate", "services: {b: {rate_limit: {burst: 5}}}", []string{"services.b.rate_limit.requests_per_second: must be > 0 and at most 1000000000"}},
		{"rate limit burst 0", "services: {b: {rate_limit: {requests_per_second: 5, burst: 0}}}", []string{"services.b.rate_limit.burst: must be 1..1000000000"}},
		{"rate limit overrides", "services: {b: {rate_limit: {requests_per_second: 5, overrides: {Bad: 1, ok: 0}}}}", []string{
			`services.b.rate_limit.overrides.Bad: invalid service name "Bad"`,
			"services.b.rate_limit.overrides.ok: must be > 0 and at most 1000000000 requests per second",
		}},

		// fault.
		{"fault", "services: {b: {fault: {delay: {percent: 10, duration: 200ms}, abort: {percent: 5, http_status: 503, grpc_code: unavailable}, only_with_header: x-inmesh-fault}}}", nil},
		{"fault on a route", "services: {b: {routes: [{fault: {abort: {percent: 100}}}]}}", nil},
		{"fault empty", "services: {b: {fault: {only_with_header: x-f}}}", []string{"services.b.fault: set delay, abort or both: a fault block without either injects nothing"}},
		{"fault percents", "services: {b: {fault: {delay: {percent: 101, duration: 1s}, abort: {percent: -1}}}}", []string{
			"services.b.fault.delay.percent: must be 0..100",
			"services.b.fault.abort.percent: must be 0..100",
		}},
		{"fault delay no duration", "services: {b: {fault: {delay: {percent: 1}}}}", []string{"services.b.fault.delay.duration: must be set"}},
		{"fault status", "services: {b: {fault: {abort: {percent: 1, http_status: 600}}}}", []string{"services.b.fault.abort.http_status: must be 200..599"}},
		{"fault status 0", "services: {b: {fault: {abort: {percent: 1, http_status: 0}}}}", []string{"services.b.fault.abort.http_status: must be 200..599"}},
		{"fault grpc code", "services: {b: {fault: {abort: {percent: 1, grpc_code: Unavailable}}}}", []string{`services.b.fault.abort.grpc_code: unknown gRPC code "Unavailable": write it as retry_on does, such as unavailable or resource-exhausted`}},
		{"fault header", "services: {b: {fault: {abort: {percent: 1}, only_with_header: 'x y'}}}", []string{`services.b.fault.only_with_header: invalid header name "x y"`}},

		// authorization deny and mode.
		{"authz deny and audit", "services: {b: {authorization: {default: allow, mode: audit, deny: [{from: ['*'], paths: [/admin]}], rules: [{from: [a]}]}}}", nil},
		{"authz clean paths", "services: {b: {authorization: {rules: [{from: [a], paths: [/, /a/, /pkg.S/M]}]}}}", nil},
		{"authz unclean paths", `services: {b: {authorization: {deny: [{from: ["*"], paths: [//admin, /a/./b, /a/.., /%61dmin, '/a\b']}]}}}`, []string{
			`services.b.authorization.deny[0].paths[0]: must be a clean path (no "//", "." or ".." segments, "%" or "\"): requests are matched once cleaned and decoded, so this one could never match`,
			`services.b.authorization.deny[0].paths[1]: must be a clean path (no "//", "." or ".." segments, "%" or "\"): requests are matched once cleaned and decoded, so this one could never match`,
			`services.b.authorization.deny[0].paths[2]: must be a clean path (no "//", "." or ".." segments, "%" or "\"): requests are matched once cleaned and decoded, so this one could never match`,
			`services.b.authorization.deny[0].paths[3]: must be a clean path (no "//", "." or ".." segments, "%" or "\"): requests are matched once cleaned and decoded, so this one could never match`,
			`services.b.authorization.deny[0].paths[4]: must be a clean path (no "//", "." or ".." segments, "%" or "\"): requests are matched once cleaned and decoded, so this one could never match`,
		}},
		{"authz mode", "services: {b: {authorization: {mode: dry-run}}}", []string{`services.b.authorization.mode: must be one of enforce, audit; got "dry-run"`}},
		{"authz deny rules", "services: {b: {authorization: {deny: [{paths: [admin], methods: ['P T']}]}}}", []string{
			`services.b.authorization.deny[0].from: must name at least one calling service (or "*" for any)`,
			`services.b.authorization.deny[0].paths[0]: must start with "/"`,
			`services.b.authorization.deny[0].methods[0]: invalid method "P T"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblems(t, tt.in, tt.want)
		})
	}
}

// TestResolveProtection: the protection blocks resolve with their
// defaults, the service's block replacing the defaults', the route's its
// service's, and a level naming a breaker form dropping the other form.
func TestResolveProtection(t *testing.T) {
	doc, err := Parse([]byte(`
defaults:
  circuit_breaker: {consecutive_failures: 3, open_for: 2s}
  concurrency: {max: 50}
  hedge: {delay: 10ms}
services:
  billing:
    circuit_breaker: {failure_rate: 0.5}
    concurrency: {adaptive: {min: 4}, max_wait: 25ms}
    rate_limit: {requests_per_second: 2.5}
    fault: {abort: {percent: 5}}
    routes:
      - name: slow
        hedge: {quantile: p95, max: 2}
        fault: {delay: {percent: 1, duration: 1s}}
      - name: rest
  ledger: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	b := snap.Services["billing"]
	if cb := b.Effective.CircuitBreaker; cb.ConsecutiveFailures != 0 || cb.FailureRate != 0.5 || cb.Window.Std() != 10*time.Second || cb.MinCalls != 20 || cb.OpenFor.Std() != 2*time.Second || cb.HalfOpenRequests != 1 {
		t.Errorf("billing breaker = %+v, want the rate form with the defaults' open_for", *cb)
	}
	if c := b.Concurrency; c.Max != 0 || c.Adaptive == nil || *c.Adaptive != (AdaptiveConcurrency{Min: 4, Initial: 20, Max: 1000}) || c.MaxWait.Std() != 25*time.Millisecond {
		t.Errorf("billing concurrency = %+v %+v", c, c.Adaptive)
	}
	if r := b.RateLimit; r.RequestsPerSecond != 2.5 || r.Burst != 3 {
		t.Errorf("billing rate_limit = %+v, want burst 3 (a second's worth, rounded up)", r)
	}
	slow, rest := b.Routes[0].Effective, b.Routes[1].Effective
	if h := slow.Hedge; h.Quantile != "p95" || h.Max != 2 || *h.NonIdempotent {
		t.Errorf("slow hedge = %+v", h)
	}
	if h := rest.Hedge; h.Delay.Std() != 10*time.Millisecond || h.Max != 1 {
		t.Errorf("rest hedge = %+v, want the defaults' with max 1", h)
	}
	if f := slow.Fault; f.Abort != nil || f.Delay == nil {
		t.Errorf("slow fault = %+v, want the route's block whole", f)
	}
	if a := rest.Fault.Abort; a.HTTPStatus != 503 || a.GRPCCode != "unavailable" || a.Percent != 5 {
		t.Errorf("rest fault abort = %+v", a)
	}
	if doc.Services["billing"].Fault.Abort.HTTPStatus != 0 {
		t.Error("resolving wrote the defaults into the document")
	}
	l := snap.Services["ledger"]
	if cb := l.Effective.CircuitBreaker; cb.ConsecutiveFailures != 3 || cb.FailureRate != 0 || cb.Window != 0 {
		t.Errorf("ledger breaker = %+v, want the defaults' consecutive form", *cb)
	}
	if l.Concurrency.Max != 50 || l.RateLimit != nil || l.Effective.Fault != nil {
		t.Errorf("ledger = concurrency %+v, rate_limit %+v, fault %+v", l.Concurrency, l.RateLimit, l.Effective.Fault)
	}
}
