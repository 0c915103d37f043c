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
