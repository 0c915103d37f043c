package mesh

import (
	"time"

	"github.com/inmesh/inmesh/internal/core"
)

// SplitTarget is one entry of a route's split as Explain shows it: the
// service and subset it calls, how many of their endpoints are available
// now, its failover targets likewise, and where its calls go now.
type SplitTarget struct {
	Service   string `json:"service"`
	Subset    string `json:"subset,omitempty"` // "": every endpoint of the service
	Weight    int    `json:"weight"`
	Endpoints int    `json:"endpoints"` // the endpoints the target selects
	Available int    `json:"available"` // those not ejected now
	// Failover are the entry's failover targets, in order (their Weight
	// 0).
	Failover []SplitTarget `json:"failover,omitempty"`
	// Now is where the entry's calls go now: the entry's own target
	// ("v1", "ledger/v1"), a failover target ("v2 (failover from v1)"),
	// or "" when none of them has an available endpoint.
	Now string `json:"now,omitempty"`
}

// splitTargets describes the split of rt at now.
func splitTargets(rt *core.Route, now time.Time) []SplitTarget {
	if len(rt.Split) == 0 {
		return nil
	}
	out := make([]SplitTarget, 0, len(rt.Split))
	for i := range rt.Split {
		e := &rt.Split[i]
		st := poolTarget(e.Pool, now)
		st.Weight = e.Weight
		for _, fp := range e.Failover {
			st.Failover = append(st.Failover, poolTarget(fp, now))
		}
		if e.Failover == nil {
			if st.Available > 0 {
				st.Now = e.Pool.Label
			}
		} else if p := e.Choose(now); p != nil {
			st.Now = p.Label
		}
		if st.Now == "" && st.Available > 0 {
			st.Now = "every endpoint"
		}
		out = append(out, st)
	}
	return out
}

func poolTarget(p *core.Pool, now time.Time) SplitTarget {
	return SplitTarget{Service: p.Service, Subset: p.Subset, Endpoints: len(p.Hosts), Available: p.AvailableHosts(now)}
}

// splitNotes are the notes of Explain's split reason on the entries of
// rt that call another service or fail over.
func splitNotes(service string, rt *core.Route, now time.Time) []string {
	var notes []string
	for i := range rt.Split {
		e := &rt.Split[i]
		if e.Pool.Service != service {
			notes = append(notes, e.Pool.Label+" calls service "+e.Pool.Service+" with its endpoints and identity")
		}
		if e.Failover == nil || e.Weight == 0 || e.Pool.AvailableHosts(now) > 0 {
			continue
		}
		if p := e.Choose(now); p != nil {
			notes = append(notes, labelOr(e.Pool.Label)+" has no available endpoint: its calls go to "+p.Label)
		} else {
			notes = append(notes, labelOr(e.Pool.Label)+" has no available endpoint, nor has any of its failover targets")
		}
	}
	return notes
}

// entryName names split entry e of a route of service in a reason:
// "subset v2" of the service's own, the pool's label otherwise.
func entryName(service string, e core.SplitEntry) string {
	if e.Subset != "" && (e.Pool.Service == "" || e.Pool.Service == service) {
		return "subset " + e.Subset
	}
	return labelOr(e.Pool.Label)
}

func labelOr(l string) string {
	if l == "" {
		return "every endpoint"
	}
	return l
}

// hostLabel is the name of pool p in the subsets of an endpoint of a
// route of service: its subset, or service/subset of another service.
func hostLabel(service string, p *core.Pool) string {
	if p.Service == service || p.Service == "" {
		return p.Subset
	}
	if p.Subset == "" {
		return p.Service
	}
	return p.Service + "/" + p.Subset
}
