package policy

import (
	"math"
	"strconv"
	"time"

	"github.com/inmesh/inmesh/resilience"
)

// Bounds of the protection blocks.
const (
	maxConcurrency = 1_000_000     // in-flight calls to one destination
	maxRate        = 1_000_000_000 // requests per second, and burst
	maxMinCalls    = 1_000_000     // a failure-rate breaker's min_calls
	maxHedges      = 5             // extra attempts in flight
	// maxWindow bounds a failure-rate breaker's window: an hour of
	// buckets is as far back as a rate means anything.
	maxWindow = time.Hour
)

// breakerForm checks the failure-rate fields of circuit breaker c, at the
// path being checked (the consecutive form is checked by settings).
func (v *validator) breakerForm(c *CircuitBreaker) {
	rate := c.FailureRate != 0
	if rate && !(c.FailureRate > 0 && c.FailureRate <= 1) {
		v.addAt("failure_rate", "must be in (0, 1], got %s", strconv.FormatFloat(c.FailureRate, 'g', -1, 64))
	}
	if rate && v.set("consecutive_failures", c.ConsecutiveFailures) {
		v.add("set consecutive_failures or failure_rate, not both: they are two kinds of breaker")
	}
	v.duration("window", c.Window, maxWindow)
	if v.set("min_calls", c.MinCalls) && (c.MinCalls < 1 || c.MinCalls > maxMinCalls) {
		v.addAt("min_calls", "must be 1..%d", maxMinCalls)
	}
	if !rate {
		if c.Window != 0 {
			v.addAt("window", "applies only with failure_rate")
		}
		if v.set("min_calls", c.MinCalls) {
			v.addAt("min_calls", "applies only with failure_rate")
		}
	}
}

// concurrency checks c, at the path being checked.
func (v *validator) concurrency(c *Concurrency) {
	fixed := v.set("max", c.Max)
	if fixed && (c.Max < 1 || c.Max > maxConcurrency) {
		v.addAt("max", "must be 1..%d", maxConcurrency)
	}
	switch a := c.Adaptive; {
	case a != nil && fixed:
		v.add("set max or adaptive, not both")
	case a != nil:
		m := v.push("adaptive")
		ok := true
		for _, f := range []struct {
			key string
			n   int
		}{{"min", a.Min}, {"initial", a.Initial}, {"max", a.Max}} {
			if v.set(f.key, f.n) && (f.n < 1 || f.n > maxConcurrency) {
				v.addAt(f.key, "must be 1..%d", maxConcurrency)
				ok = false
			}
		}
		if ok && a.Min != 0 && a.Max != 0 && a.Min > a.Max {
			v.addAt("max", "must be at least min (%d), got %d", a.Min, a.Max)
		} else if ok && a.Initial != 0 && (a.Min != 0 && a.Initial < a.Min || a.Max != 0 && a.Initial > a.Max) {
			v.addAt("initial", "must be within min..max")
		}
		v.pop(m)
	case !fixed:
		v.add("set max (a fixed limit) or adaptive (a learned one)")
	}
	v.duration("max_wait", c.MaxWait, maxBackoff)
}

// hedge checks h, at the path being checked.
func (v *validator) hedge(h *Hedge) {
	switch {
	case h.Delay != 0 && h.Quantile != "":
		v.add("set delay or quantile, not both")
	case h.Delay == 0 && h.Quantile == "":
		v.add("set delay (a fixed wait) or quantile (such as p95 of the route's recent latency)")
	}
	v.duration("delay", h.Delay, maxBackoff)
	if h.Quantile != "" {
		if _, err := resilience.ParseQuantile(h.Quantile); err != nil {
			v.addAt("quantile", "must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got %q", h.Quantile)
		}
	}
	if v.set("max", h.Max) && (h.Max < 1 || h.Max > maxHedges) {
		v.addAt("max", "must be 1..%d", maxHedges)
	}
}

// rateLimit checks r, at the path being checked.
func (v *validator) rateLimit(r *RateLimit) {
	if !(r.RequestsPerSecond > 0 && r.RequestsPerSecond <= maxRate) {
		v.addAt("requests_per_second", "must be > 0 and at most %d", maxRate)
	}
	if v.set("burst", r.Burst) && (r.Burst < 1 || r.Burst > maxRate) {
		v.addAt("burst", "must be 1..%d", maxRate)
	}
	if len(r.Overrides) > 0 {
		m := v.push("overrides")
		for _, caller := range sortedKeys(r.Overrides, &v.mergedKeys) {
			rps := r.Overrides[caller]
			switch {
			case !IsServiceName(caller):
				v.addAt(caller, "invalid service name %q", caller)
			case !(rps > 0 && rps <= maxRate):
				v.addAt(caller, "must be > 0 and at most %d requests per second", maxRate)
			}
		}
		v.pop(m)
	}
}

// fault checks f, at the path being checked.
func (v *validator) fault(f *Fault) {
	if f.Delay == nil && f.Abort == nil {
		v.add("set delay, abort or both: a fault block without either injects nothing")
	}
	if d := f.Delay; d != nil {
		m := v.push("delay")
		v.percent(d.Percent)
		if d.Duration == 0 {
			v.addAt("duration", "must be set")
		}
		v.duration("duration", d.Duration, maxBackoff)
		v.pop(m)
	}
	if a := f.Abort; a != nil {
		m := v.push("abort")
		v.percent(a.Percent)
		if v.set("http_status", a.HTTPStatus) && (a.HTTPStatus < 200 || a.HTTPStatus > 599) {
			v.addAt("http_status", "must be 200..599")
		}
		if a.GRPCCode != "" {
			if _, ok := resilience.ParseGRPCCode(a.GRPCCode); !ok {
				v.addAt("grpc_code", "unknown gRPC code %q: write it as retry_on does, such as unavailable or resource-exhausted", a.GRPCCode)
			}
		}
		v.pop(m)
	}
	if f.OnlyWithHeader != "" && !isToken(f.OnlyWithHeader) {
		v.addAt("only_with_header", "invalid header name %q", f.OnlyWithHeader)
	}
}

// percent checks the percentage at key "percent".
func (v *validator) percent(p float64) {
	if math.IsNaN(p) || p < 0 || p > 100 {
		v.addAt("percent", "must be 0..100")
	}
}
