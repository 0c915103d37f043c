package policy

import (
	"slices"
	"time"
)

// Bounds of the split entries' targets.
const (
	// maxFailover is the most failover targets a split entry may list: a
	// call walks them in order at pick time.
	maxFailover = 8
	// minConnectTimeout and maxConnectTimeout bound connect_timeout.
	minConnectTimeout = time.Millisecond
	maxConnectTimeout = time.Hour
)

// split checks the entries of a route's split as written, at the path of
// the split: weights, targets named once, failover lists.
func (v *validator) split(split []WeightedSubset) {
	sum := 0
	var seen map[Target]int // target -> index, for long splits
	if len(split) > smallMapping {
		seen = make(map[Target]int, len(split))
	}
	for i := range split {
		ws := &split[i]
		mi := v.pushIndex(i)
		switch {
		case ws.Weight < 0:
			v.addAt("weight", "must be >= 0")
		case ws.Weight > maxSplitWeight:
			v.addAt("weight", "must be at most %d", maxSplitWeight)
		default:
			sum += ws.Weight
		}
		if ws.Service != "" && !IsServiceName(ws.Service) {
			v.addAt("service", "invalid service name %q", ws.Service)
		}
		tgt := Target{Service: ws.Service, Subset: ws.Subset}
		switch first, dup := firstTarget(split, i, seen); {
		case dup && ws.Service == "":
			v.addAt("subset", "subset %q appears twice in the split (also split[%d])", ws.Subset, first)
		case dup:
			v.add("target %s appears twice in the split (also split[%d])", targetText(tgt), first)
		case seen != nil:
			seen[tgt] = i
		}
		if len(ws.Failover) > 0 {
			mf := v.push("failover")
			v.failover(tgt, ws.Failover)
			v.pop(mf)
		}
		v.pop(mi)
	}
	if sum == 0 {
		v.add("the weights must add up to more than 0")
	}
}

// failover checks the failover targets of the split entry own, at the path
// of its failover list.
func (v *validator) failover(own Target, targets []Target) {
	if len(targets) > maxFailover {
		v.add("at most %d targets, got %d", maxFailover, len(targets))
	}
	for j, t := range targets {
		mj := v.pushIndex(j)
		switch {
		case t.Service != "" && !IsServiceName(t.Service):
			v.addAt("service", "invalid service name %q", t.Service)
		case t == own:
			v.add("is the entry's own target %s", targetText(t))
		case slices.Contains(targets[:j], t):
			v.add("target %s appears twice (also failover[%d])", targetText(t), slices.Index(targets, t))
		}
		v.pop(mj)
	}
}

// firstTarget returns the index of the first entry before i that names the
// target of entry i, from seen when it is not nil.
func firstTarget(split []WeightedSubset, i int, seen map[Target]int) (int, bool) {
	t := Target{Service: split[i].Service, Subset: split[i].Subset}
	if seen != nil {
		first, ok := seen[t]
		return first, ok
	}
	for j := range i {
		if split[j].Service == t.Service && split[j].Subset == t.Subset {
			return j, true
		}
	}
	return 0, false
}

// targetText names a target in a problem: service/subset, the service
// alone for all its endpoints, the subset alone for the route's service.
func targetText(t Target) string {
	switch {
	case t.Service == "":
		return "subset " + t.Subset
	case t.Subset == "":
		return "service " + t.Service
	}
	return t.Service + "/" + t.Subset
}

// splitTargets checks, on the merged view, the split of route r of the
// service called name (at the path of the route): every entry and failover
// target names the service itself or a service of the document, a subset
// that service has, and, when the service lists static endpoints, a subset
// that selects some. noteName, when not "", is the service a problem
// reported at the defaults' path is about.
func (v *validator) splitTargets(name, noteName string, def, svc *Service, r *Route) {
	if len(r.Split) == 0 {
		return
	}
	m := v.push("split")
	for j := range r.Split {
		ws := &r.Split[j]
		mj := v.pushIndex(j)
		v.target(name, noteName, def, svc, Target{Service: ws.Service, Subset: ws.Subset})
		if len(ws.Failover) > 0 {
			mf := v.push("failover")
			for k, t := range ws.Failover {
				mk := v.pushIndex(k)
				v.target(name, noteName, def, svc, t)
				v.pop(mk)
			}
			v.pop(mf)
		}
		v.pop(mj)
	}
	v.pop(m)
}

// target checks one target of a split of service name (see splitTargets),
// at the path of the entry or failover target.
func (v *validator) target(name, noteName string, def, svc *Service, t Target) {
	if t.Service == "" || t.Service == name {
		if t.Subset != "" && !hasSubset(def, svc, t.Subset) {
			v.addAt("subset", "unknown subset %q%s", t.Subset, forService(noteName))
		}
		return
	}
	other, ok := v.doc.Services[t.Service]
	if !ok {
		v.addAt("service", "unknown service %q: a split or failover may call a service of the document only%s", t.Service, forService(noteName))
		return
	}
	if t.Subset == "" {
		return
	}
	sel, ok := subsetOf(def, other, t.Subset)
	if !ok {
		v.addAt("subset", "unknown subset %q of service %s%s", t.Subset, t.Service, forService(noteName))
		return
	}
	eps := pick(def, other, func(s *Service) []Endpoint { return s.Endpoints })
	if len(eps) > 0 && !slices.ContainsFunc(eps, func(ep Endpoint) bool { return selects(sel, ep.Labels) }) {
		v.addAt("subset", "subset %q of service %s selects none of its %s%s", t.Subset, t.Service, endpointCount(len(eps)), forService(noteName))
	}
}
