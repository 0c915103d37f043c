package core

import (
	"slices"
	"strings"

	"github.com/inmesh/inmesh/discovery"
)

// hashPickerKey names a consistent-hash picker: its load balancer and the
// addresses of its hosts, in order.
type hashPickerKey struct {
	lb    balancer
	hosts string
}

// hashPicker returns the ring_hash or maglev picker of lb over hosts, nil
// for another load balancer. A picker is built once and shared by the
// pools of this compilation and the next ones that have the same hosts
// (the same *Host values, in the same order): a maglev table takes a few
// milliseconds and 256 KiB to build, and routes and reloads often repeat
// the same endpoints.
func (c *compiler) hashPicker(lb balancer, hosts []*discovery.Host) *discovery.HashPicker {
	if lb.name != discovery.RingHash && lb.name != discovery.Maglev {
		return nil
	}
	var b strings.Builder
	for _, h := range hosts {
		b.WriteString(h.Address)
		b.WriteByte(0)
	}
	k := hashPickerKey{lb: lb, hosts: b.String()}
	p, ok := part(c.reg.hashPickers, k)
	if !ok || !slices.Equal(p.Hosts(), hosts) {
		pk, _ := discovery.NewPickerOptions(lb.name, hosts, lb.opts)
		p = pk.(*discovery.HashPicker)
	}
	hold(c.reg.hashPickers, &c.used.hashPickers, k, p)
	return p
}
