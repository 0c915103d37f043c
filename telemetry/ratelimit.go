package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The rate limit a service's own mesh puts on its callers.
const (
	// MetricRateLimitDecisions counts the decisions of this service's rate
	// limit on its incoming calls: result allowed or limited, with the
	// caller's bucket when the limit is per caller.
	MetricRateLimitDecisions = "inmesh.rate_limit.decisions"
	UnitRateLimitDecisions   = "{decision}"
	DescRateLimitDecisions   = "Rate limit decisions on incoming calls, allowed or limited."

	// AttrRateLimitResult is RateLimitAllowed or RateLimitLimited.
	AttrRateLimitResult = "result"

	RateLimitAllowed = "allowed"
	RateLimitLimited = "limited"
)

// rateLimitInstruments are the instruments of the server's rate limit.
type rateLimitInstruments struct {
	decisions metric.Int64Counter
	opts      cowCache[rateLimitKey, []metric.AddOption]
}

// rateLimitKey identifies the attribute set of one rate limit decision.
type rateLimitKey struct {
	service, caller    string
	perCaller, allowed bool
}

// newRateLimitInstruments creates the rate limit's instruments from m.
// An error is returned joined by New; the instruments are usable even then.
func newRateLimitInstruments(m metric.Meter) (*rateLimitInstruments, error) {
	r := &rateLimitInstruments{opts: cowCache[rateLimitKey, []metric.AddOption]{max: maxCachedAttributeSets}}
	var err error
	r.decisions, err = m.Int64Counter(MetricRateLimitDecisions,
		metric.WithUnit(UnitRateLimitDecisions), metric.WithDescription(DescRateLimitDecisions))
	return r, err
}

// RecordRateLimit counts one decision of service's rate limit: allowed or
// limited. A limit per caller records the caller's bucket as the caller
// attribute (a bounded value: the callers past the limiter's bound are
// one, "" those without a verified identity); a limit that all callers
// share records none. HOT: cached attribute sets, no lock, no allocation
// in steady state.
func (in *Instruments) RecordRateLimit(ctx context.Context, service, caller string, perCaller, allowed bool) {
	if in == nil || in.rateLimit == nil {
		return
	}
	if !perCaller {
		caller = ""
	}
	r := in.rateLimit
	r.decisions.Add(ctx, 1, r.opts.get(rateLimitKey{service, caller, perCaller, allowed}, rateLimitOptions)...)
}

func rateLimitOptions(k rateLimitKey) []metric.AddOption {
	result := RateLimitLimited
	if k.allowed {
		result = RateLimitAllowed
	}
	kvs := make([]attribute.KeyValue, 0, 3)
	kvs = append(kvs, attribute.String(AttrService, k.service), attribute.String(AttrRateLimitResult, result))
	if k.perCaller {
		kvs = append(kvs, attribute.String(AttrCaller, k.caller))
	}
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}
