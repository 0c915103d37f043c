package telemetry

import (
	"net/http"
	"net/textproto"

	"go.opentelemetry.io/otel/propagation"
)

// headerCarrier is propagation.HeaderCarrier that reads and writes the
// W3C trace context and baggage headers without canonicalizing their
// names at each call: OTel's propagators name them in lower case, which
// http.Header's methods turn into a new string every time (two allocations
// for every request a server extracts from). Other names are
// canonicalized as http.Header does.
type headerCarrier http.Header

var (
	_ propagation.TextMapCarrier = headerCarrier(nil)
	_ propagation.ValuesGetter   = headerCarrier(nil)
)

// canonicalKey is textproto.CanonicalMIMEHeaderKey, without an allocation
// for the W3C propagators' names.
func canonicalKey(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return textproto.CanonicalMIMEHeaderKey(key)
}

// Get returns the first value of key.
func (c headerCarrier) Get(key string) string {
	if v := c[canonicalKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values returns every value of key.
func (c headerCarrier) Values(key string) []string { return c[canonicalKey(key)] }

// Set sets key to value, replacing any values it had.
func (c headerCarrier) Set(key, value string) { c[canonicalKey(key)] = []string{value} }

// Keys lists the keys of the carrier.
func (c headerCarrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// HeaderSlots is the storage of the values InjectSlots writes: the W3C
// traceparent and tracestate values live in it instead of a new one-value
// slice each. The caller holds it where it keeps the request, one per
// header, and never reuses it for another (the header keeps the values).
// Its zero value is ready; it is not safe for concurrent use.
type HeaderSlots struct {
	h    http.Header
	vals [2]string // traceparent, tracestate
}

var _ propagation.TextMapCarrier = (*HeaderSlots)(nil)

// Get returns the first value of key.
func (s *HeaderSlots) Get(key string) string { return headerCarrier(s.h).Get(key) }

// Set sets key to value, replacing any values it had: traceparent and
// tracestate in the slots, any other key as http.Header does.
func (s *HeaderSlots) Set(key, value string) {
	var i int
	switch key {
	case "traceparent":
		i = 0
	case "tracestate":
		i = 1
	default:
		headerCarrier(s.h).Set(key, value)
		return
	}
	s.vals[i] = value
	s.h[canonicalKey(key)] = s.vals[i : i+1 : i+1]
}

// Keys lists the keys of the carrier.
func (s *HeaderSlots) Keys() []string { return headerCarrier(s.h).Keys() }
