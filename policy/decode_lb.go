package policy

import (
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

var settingsType = reflect.TypeFor[Settings]()

// lbForms records, while a struct holding Settings is decoded, which keys
// of the consistent-hash settings it had: the load_balancer mapping, and
// the flat hash and ring_hash beside it (which may not both be given).
type lbForms struct {
	object, hash, ring bool
}

// loadBalancerSugar decodes the mapping form of load_balancer, the sugar
//
//	load_balancer: {policy: maglev, hash: [{header: x-user}], ring_hash: {...}}
//	load_balancer: {hash: {header: x-user}}
//
// into the flat fields of the Settings holding it (LoadBalancer, Hash,
// RingHash): hash is one policy or a list of them, and without a policy
// the load balancer is ring_hash. It reports whether it decoded value: only
// for the load_balancer key of a Settings, when value is a mapping (a
// string goes the usual way). It also notes the flat hash and ring_hash
// keys in lb. key is on the path.
func (d *decoder) loadBalancerSugar(lb *lbForms, key string, value *yaml.Node, v reflect.Value, idx []int) bool {
	switch key {
	case "load_balancer", "hash", "ring_hash":
	default:
		return false
	}
	sv := v
	if len(idx) > 1 {
		sv = v.FieldByIndex(idx[:len(idx)-1])
	}
	if sv.Type() != settingsType {
		return false
	}
	switch key {
	case "hash":
		lb.hash = true
		return false
	case "ring_hash":
		lb.ring = true
		return false
	}
	if n := d.aliased(value); n == nil || n.Kind != yaml.MappingNode {
		return false
	}
	n := d.visit(value)
	if n == nil {
		return true
	}
	lb.object = true
	s := sv.Addr().Interface().(*Settings)
	policy := false
	d.each(n, func(k string, value *yaml.Node) {
		m := d.push(k)
		defer d.pop(m)
		switch k {
		case "policy":
			policy = true
			d.decode(value, reflect.ValueOf(&s.LoadBalancer).Elem())
		case "hash":
			if one := d.aliased(value); one != nil && one.Kind == yaml.MappingNode {
				var h HashPolicy
				d.decode(value, reflect.ValueOf(&h).Elem())
				s.Hash = []HashPolicy{h}
				return
			}
			d.decode(value, reflect.ValueOf(&s.Hash).Elem())
		case "ring_hash":
			d.decode(value, reflect.ValueOf(&s.RingHash).Elem())
			d.flatZeros(m)
		default:
			d.failAt("unknown field (the load_balancer mapping has policy, hash and ring_hash)")
		}
	})
	if !policy && s.LoadBalancer == "" {
		s.LoadBalancer = "ring_hash"
	}
	return true
}

// aliased returns n with its aliases followed, without counting nodes;
// nil when an alias is unresolved.
func (d *decoder) aliased(n *yaml.Node) *yaml.Node {
	for hops := 0; n.Kind == yaml.AliasNode; hops++ {
		if n.Alias == nil || hops > 100 {
			return nil
		}
		n = n.Alias
	}
	return n
}

// flatZeros copies the ring sizes written as 0 under the load_balancer
// mapping's ring_hash (the path being decoded) to the flat ring_hash
// beside load_balancer, where the validator looks for them. lbEnd is the
// length of the path up to and including load_balancer.
func (d *decoder) flatZeros(lbEnd int) {
	if len(d.zeros) == 0 {
		return
	}
	sugar := string(d.path)
	parent := strings.TrimSuffix(strings.TrimSuffix(string(d.path[:lbEnd]), "load_balancer"), ".")
	for _, k := range []string{"minimum_ring_size", "maximum_ring_size"} {
		if d.zeros[sugar+"."+k] {
			d.zeros[string(appendKey(appendKey([]byte(parent), "ring_hash"), k))] = true
		}
	}
}
