package discovery

import (
	"maps"

	"github.com/inmesh/inmesh/policy"
)

// SourceStatic is the Source of the snapshot built from a policy document.
const SourceStatic = "policy"

// Endpoint is one instance of a service.
type Endpoint struct {
	Address string            `json:"address"` // host:port
	Labels  map[string]string `json:"labels,omitempty"`
}

// Snapshot is an immutable set of endpoints per service. Never modify one,
// nor the slices and maps it holds: snapshots are shared between goroutines
// without locks and replaced whole.
type Snapshot struct {
	Source   string // SourceStatic ("policy"), later "consul"
	Services map[string][]Endpoint
	// Why says, for a service the source watches that has no endpoints,
	// why, where the source can tell (with Consul: instances there are,
	// but none Connect-capable). A call that finds no endpoint says it.
	Why map[string]string
}

// WhyEmpty is why service has no endpoints, "" when the source cannot
// tell. A nil *Snapshot cannot.
func (s *Snapshot) WhyEmpty(service string) string {
	if s == nil {
		return ""
	}
	return s.Why[service]
}

// Endpoints returns the endpoints of service, nil when it has none. The
// result belongs to the snapshot: do not modify it. A nil *Snapshot has no
// endpoints.
func (s *Snapshot) Endpoints(service string) []Endpoint {
	if s == nil {
		return nil
	}
	return s.Services[service]
}

// Static builds the static snapshot of a policy document: the endpoints of
// each service, or the defaults' endpoints for a service that lists none (a
// service's list replaces the defaults' whole, as for every policy field).
// Services left without endpoints are not in the snapshot. The snapshot
// shares nothing with doc. A nil doc gives an empty snapshot.
func Static(doc *policy.Document) *Snapshot { return static(doc, maps.Clone[map[string]string]) }

// StaticOf is Static of a policy snapshot's document, whose endpoints'
// label maps the snapshot shares rather than copies: a policy snapshot is
// never changed, and a policy of many destinations holds its labels once.
// A nil snap gives an empty snapshot.
func StaticOf(snap *policy.Snapshot) *Snapshot {
	if snap == nil {
		return static(nil, nil)
	}
	return static(snap.Doc, func(l map[string]string) map[string]string { return l })
}

// static is Static, the labels of each endpoint given by labels.
func static(doc *policy.Document, labels func(map[string]string) map[string]string) *Snapshot {
	s := &Snapshot{Source: SourceStatic, Services: map[string][]Endpoint{}}
	if doc == nil {
		return s
	}
	var defaults []policy.Endpoint
	if doc.Defaults != nil {
		defaults = doc.Defaults.Endpoints
	}
	for name, svc := range doc.Services {
		eps := defaults
		if svc != nil && len(svc.Endpoints) > 0 {
			eps = svc.Endpoints
		}
		if len(eps) == 0 {
			continue
		}
		out := make([]Endpoint, len(eps))
		for i, ep := range eps {
			out[i] = Endpoint{Address: ep.Address, Labels: labels(ep.Labels)}
		}
		s.Services[name] = out
	}
	return s
}

// Select returns the endpoints whose labels contain every pair of selector
// (a nil or empty selector selects all), in their order, as a new slice; the
// endpoints' label maps are shared with eps. It returns nil when none match.
// A selector value of "" asks only that the label be present, whatever its
// value: {"tag:canary": ""} selects the Consul instances tagged canary.
func Select(eps []Endpoint, selector map[string]string) []Endpoint {
	var out []Endpoint
	for _, ep := range eps {
		if matches(ep.Labels, selector) {
			out = append(out, ep)
		}
	}
	return out
}

func matches(labels, selector map[string]string) bool {
	for k, want := range selector {
		got, ok := labels[k]
		if !ok || (want != "" && got != want) {
			return false
		}
	}
	return true
}
