package mesh

import (
	"fmt"
	"strings"
	"time"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/policy"
)

// HashExplanation is the consistent hashing of a ring_hash or maglev
// route, as Explain shows it for one request.
type HashExplanation struct {
	// Policies are the route's hash policies, in order; none: every
	// request picks at random.
	Policies []policy.HashPolicy `json:"policies"`
	// The ring's sizes (ring_hash) or the table's (maglev).
	MinimumRingSize int `json:"minimum_ring_size,omitempty"`
	MaximumRingSize int `json:"maximum_ring_size,omitempty"`
	TableSize       int `json:"table_size,omitempty"`
	// Inputs are the policies that produced a value for this request, in
	// the order they were combined ("header x-user", "cookie session",
	// "query_parameter user", "source_ip"); none: the request has no hash
	// and is picked at random.
	Inputs []string `json:"inputs"`
	// Endpoint is where the request's hash leads now, when the route
	// sends to one pool (no split, or one subset with weight); "" when the
	// request has no hash.
	Endpoint string `json:"endpoint,omitempty"`
}

// explainHash fills ex.Hash and the load balancer's reason for a request
// (creq) of route rt; levels are the document's, most specific first.
func explainHash(ex *Explanation, rt *core.Route, creq *core.Request, pools []*core.Pool, levels []level, now time.Time) {
	eff := rt.Eff
	lbSrc, lbSet := "", ""
	for _, l := range levels {
		if l.s != nil && l.s.LoadBalancer != "" {
			lbSrc, lbSet = l.name, l.s.LoadBalancer
			break
		}
	}
	hashSrc := setBy(func(s *policy.Settings) bool { return s.Hash != nil }, levels...)
	r := &ex.Reasons
	switch {
	case lbSrc != "" && lbSet == eff.LoadBalancer:
		r.LoadBalancer = eff.LoadBalancer + ": load_balancer of " + lbSrc
	case eff.Hash != nil && hashSrc != "":
		r.LoadBalancer = eff.LoadBalancer + ": hash of " + hashSrc + " (a hash without load_balancer means ring_hash)"
	default:
		r.LoadBalancer = eff.LoadBalancer + ": the default"
	}
	h := eff.Hash
	if h == nil {
		return
	}
	he := &HashExplanation{Policies: h.Policies, MinimumRingSize: h.MinimumRingSize, MaximumRingSize: h.MaximumRingSize,
		TableSize: h.TableSize, Inputs: []string{}}
	ex.Hash = he
	if len(h.Policies) == 0 {
		r.LoadBalancer += "; no hash policy: every request is picked at random"
		return
	}
	r.LoadBalancer += fmt.Sprintf("; %d hash policies of %s", len(h.Policies), hashSrc)
	if rt.Hash != nil {
		he.Inputs = rt.Hash.Inputs(creq)
	}
	if len(he.Inputs) == 0 {
		r.LoadBalancer += "; none produced a value for this request: it is picked at random"
		return
	}
	r.LoadBalancer += "; this request hashes " + strings.Join(he.Inputs, ", ")
	if key, ok := rt.Hash.Hash(creq); ok && len(pools) == 1 && pools[0].Hash != nil {
		if host := pools[0].Hash.PickHash(key, now, nil); host != nil {
			he.Endpoint = host.Address
			r.LoadBalancer += ", which leads to " + host.Address
		}
	}
}
