package discovery_test

import (
	"fmt"
	"time"

	"github.com/inmesh/inmesh/discovery"
)

func ExampleNewPicker() {
	eps := []discovery.Endpoint{
		{Address: "10.0.0.1:9001", Labels: map[string]string{"version": "v1"}},
		{Address: "10.0.0.2:9001", Labels: map[string]string{"version": "v1"}},
		{Address: "10.0.0.3:9001", Labels: map[string]string{"version": "v2"}},
	}
	// The split chose subset v1: narrow the endpoints to its labels. Hosts
	// are made once per address and kept across snapshots (nil health:
	// always available).
	var hosts []*discovery.Host
	for _, ep := range discovery.Select(eps, map[string]string{"version": "v1"}) {
		hosts = append(hosts, discovery.NewHost(ep, nil))
	}
	p, err := discovery.NewPicker(discovery.LeastRequest, hosts)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Each attempt picks again, and reports its start and end on the host.
	busy := p.Pick(time.Now())
	busy.Begin() // still in flight
	next := p.Pick(time.Now())
	next.Begin()
	next.End()

	fmt.Println("picked another host while the first is busy:", busy != next)
	fmt.Println("in flight:", busy.InFlight(), next.InFlight())
	// Output:
	// picked another host while the first is busy: true
	// in flight: 1 0
}
