package mesh

import (
	"errors"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/policy"
)

// An Option configures a Mesh. Options are applied in order by New; a later
// option of the same kind replaces an earlier one.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config holds everything New needs. newConfig sets every default in one
// place.
type config struct {
	service        string
	policyFile     string
	policyDoc      *policy.Document
	logger         *slog.Logger
	meterProvider  metric.MeterProvider
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	clock          clock.Clock
	rand           func() float64 // the fault block's draws; nil: math/rand/v2
	identity       identity.Source
	plane          ControlPlane
	cacheDir       string
	metricsHandler http.Handler // served at the admin handler's /metrics

	policyVersionHeader bool // WithPolicyVersionHeader
}

// newConfig returns the configuration of opts, also (for its control plane)
// with an error.
func newConfig(opts []Option) (*config, error) {
	c := &config{
		clock: clock.System{},
	}
	for _, o := range opts {
		if o != nil {
			o.apply(c)
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.service == "" {
		return c, errors.New("mesh: WithService is required: name this workload's service")
	}
	sources := 0
	for _, set := range []bool{c.policyFile != "", c.policyDoc != nil, c.plane != nil} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return c, errors.New("mesh: WithPolicyFile, WithPolicy and WithControlPlane are exclusive: choose one control plane")
	case sources == 0:
		return c, errors.New("mesh: no control plane: use WithPolicyFile, WithPolicy or WithControlPlane")
	}
	return c, nil
}

// WithService names this workload's logical service. It is required: the
// service name is the workload's identity and the caller name that
// destinations authorize.
func WithService(name string) Option {
	return optionFunc(func(c *config) { c.service = name })
}

// WithPolicyFile reads the policy document (YAML or JSON) from path and
// reloads it when the file changes. An edit that does not validate is logged
// and counted, and the previous version stays in force.
func WithPolicyFile(path string) Option {
	return optionFunc(func(c *config) { c.policyFile = path })
}

// WithPolicy uses a fixed in-memory policy document, for tests and
// embedding. The mesh does not modify doc, and the caller must not modify it
// after New.
func WithPolicy(doc *policy.Document) Option {
	return optionFunc(func(c *config) { c.policyDoc = doc })
}

// WithLogger sets the structured logger. nil or absent means slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithMeterProvider sets the OpenTelemetry meter provider. nil or absent
// means the global provider (otel.GetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithTracerProvider sets the OpenTelemetry tracer provider. nil or absent
// means the global provider (otel.GetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracerProvider = tp })
}

// WithPropagator sets the propagator that carries trace context on outgoing
// calls and reads it on incoming ones. nil or absent means the global one
// (otel.GetTextMapPropagator), and W3C trace context and baggage as long as
// the application has installed no global propagator.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

// WithMetricsHandler has AdminHandler serve h at /metrics, such as the
// Prometheus text of the meter provider given to WithMeterProvider. The
// mesh itself imports no metrics SDK; with the OTel Prometheus exporter
// (go.opentelemetry.io/otel/exporters/prometheus) and promhttp
// (github.com/prometheus/client_golang/prometheus/promhttp):
//
//	reg := prometheus.NewRegistry()
//	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
//	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
//	m, err := mesh.New(ctx, mesh.WithService("enrollment"), mesh.WithPolicyFile("mesh.yaml"),
//		mesh.WithMeterProvider(mp), mesh.WithMetricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
//
// nil or absent: /metrics answers 404 with how to enable it.
func WithMetricsHandler(h http.Handler) Option {
	return optionFunc(func(c *config) { c.metricsHandler = h })
}

// WithPolicyVersionHeader makes Handler add the header
// Inmesh-Policy-Version, the version of the policy in force, to every
// response it serves (denials and refusals included), and the gRPC server
// options of meshgrpc the header metadata inmesh-policy-version to every
// RPC they serve, so that a caller can see which policy the destination
// answered under. Off by default: the
// version is not a secret, but it tells a caller outside the mesh how
// current the policy is.
func WithPolicyVersionHeader() Option {
	return optionFunc(func(c *config) { c.policyVersionHeader = true })
}
