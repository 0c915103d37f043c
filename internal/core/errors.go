package core

import "fmt"

// Layer names the part of the mesh that failed a call. Package mesh
// exports it as mesh.Layer, with the constants' documentation.
type Layer string

// The layers, in the order a request meets them.
const (
	LayerPolicy    Layer = "policy"
	LayerRoute     Layer = "route"
	LayerDiscovery Layer = "discovery"
	LayerFault     Layer = "fault"
	LayerOverload  Layer = "overload"
	LayerBreaker   Layer = "breaker"
	LayerBudget    Layer = "budget"
	LayerRateLimit Layer = "rate_limit"
	LayerTimeout   Layer = "timeout"
	LayerTLS       Layer = "tls"
	LayerAuthz     Layer = "authz"
	LayerConnect   Layer = "connect"
	LayerUpstream  Layer = "upstream"
	LayerEgress    Layer = "egress"
)

// CallError holds the fields of the error of a call the mesh fails. It has
// no methods: package mesh declares CallError with exactly these fields and
// converts a *CallError to its own type (Env.Err), which carries Error,
// Unwrap and the rest. The compiler keeps the two field lists identical.
type CallError struct {
	Layer         Layer
	Service       string
	Route         string
	Subset        string
	Endpoint      string
	Attempts      int
	PolicyVersion string
	Err           error
}

// NoEndpoints is the cause of a discovery failure: the pool of service's
// subset ("" for all its endpoints) is empty.
func NoEndpoints(service, subset string) error {
	if subset == "" {
		return fmt.Errorf("service %q has no endpoints", service)
	}
	return fmt.Errorf("subset %q of service %q has no endpoints", subset, service)
}

// noEndpoints is NoEndpoints for the pool p of the call to service, with
// why the control plane gave the service none, when it knows.
func noEndpoints(service string, p *Pool) error {
	err := NoEndpoints(p.serviceOr(service), p.Subset)
	if p.Why != "" {
		return fmt.Errorf("%w: %s", err, p.Why)
	}
	return err
}
