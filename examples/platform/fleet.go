package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

// ---- the fleet: real HTTPS servers on loopback, each behind its own mesh ----

// fleet is the set of backend servers the demo runs.
type fleet struct {
	servers []*http.Server
	rpc     []*grpc.Server // endpoints labeled protocol: grpc
	meshes  []*mesh.Mesh
	wg      sync.WaitGroup
	hits    map[string]*atomic.Int64 // by service
	// moved maps an endpoint address of the document to the one the demo
	// bound instead, when the first was taken.
	moved map[string]string
	// down is the outage switch of notifications' backend.
	down atomic.Bool
}

// startFleet starts one server per endpoint of the policy, on the port the
// document names when it is free and on another one when it is not (the
// endpoint is rewritten in doc and noted in moved), each behind a mesh of
// its service: mTLS with the workload's identity, authorization of its
// callers, telemetry to mp.
//
// On a Consul agent (world not nil) each server listens on a free port,
// its mesh takes everything from the agent, and it registers as a
// Connect-native instance of its service, its version in its Meta.
func startFleet(ctx context.Context, doc *policy.Document, world *consulWorld, logger *slog.Logger, mp metric.MeterProvider) (*fleet, error) {
	type endpoint struct {
		service, version, protocol string
		ln                         net.Listener
	}
	var eps []endpoint
	f := &fleet{hits: map[string]*atomic.Int64{}, moved: map[string]string{}}
	for name, svc := range doc.Services {
		f.hits[name] = new(atomic.Int64)
		for i := range svc.Endpoints {
			ep := &svc.Endpoints[i]
			addr := ep.Address
			if world != nil {
				addr = "127.0.0.1:0" // the catalog tells the callers
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
					for _, e := range eps {
						_ = e.ln.Close()
					}
					f.close()
					return nil, err
				}
				f.moved[ep.Address] = ln.Addr().String()
				ep.Address = ln.Addr().String()
			}
			eps = append(eps, endpoint{name, ep.Labels["version"], ep.Labels["protocol"], ln})
		}
	}
	for i, ep := range eps {
		source := mesh.WithPolicy(doc)
		if world != nil {
			source = world.option()
		}
		m, err := mesh.New(ctx, mesh.WithService(ep.service), source, mesh.WithLogger(logger), mesh.WithMeterProvider(mp))
		if err == nil && world != nil {
			inst := mesh.Instance{ID: fmt.Sprintf("%s-%d", ep.service, i), Address: ep.ln.Addr().String()}
			if ep.version != "" {
				inst.Meta = map[string]string{"version": ep.version}
			}
			if err = m.Register(ctx, inst); err != nil {
				_ = m.Close()
			}
		}
		if err != nil {
			for _, e := range eps[i:] {
				_ = e.ln.Close()
			}
			f.close()
			return nil, err
		}
		f.meshes = append(f.meshes, m)
		if ep.protocol == "grpc" {
			// The stock health service, every answer counted, behind the
			// mesh: mTLS, authorization of the caller, telemetry.
			hits := f.hits[ep.service]
			srv := grpc.NewServer(append(meshgrpc.ServerOptions(m), grpc.ChainUnaryInterceptor(
				func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					hits.Add(1)
					return h(ctx, req)
				}))...)
			hs := health.NewServer()
			hs.SetServingStatus(ep.service, healthpb.HealthCheckResponse_SERVING)
			healthpb.RegisterHealthServer(srv, hs)
			f.rpc = append(f.rpc, srv)
			f.wg.Go(func() { _ = srv.Serve(ep.ln) })
			continue
		}
		srv := &http.Server{
			Handler:           m.Handler(f.behaviour(ep.service, ep.version)),
			TLSConfig:         m.ServerTLSConfig(),
			ReadHeaderTimeout: 5 * time.Second,
		}
		f.servers = append(f.servers, srv)
		f.wg.Go(func() { _ = srv.ServeTLS(ep.ln, "", "") })
	}
	return f, nil
}

func (f *fleet) close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
	for _, s := range f.rpc {
		s.Stop()
	}
	f.wg.Wait()
	for _, m := range f.meshes {
		_ = m.Close()
	}
}

// behaviour is what each service of the story does.
func (f *fleet) behaviour(service, version string) http.Handler {
	hits := f.hits[service]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch service {
		case "catalog": // flaky: one answer in four, at random, is a 503
			if rand.IntN(4) == 0 {
				http.Error(w, "catalog overloaded", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "courses")
		case "progress": // dead
			http.Error(w, "progress: database down", http.StatusInternalServerError)
		case "notifications": // healthy, but for the outage
			if f.down.Load() {
				http.Error(w, "notifications: mail relay down", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "queued")
		case "recommendations": // saturated
			select {
			case recommendationSlots <- struct{}{}:
				time.Sleep(recommendationTime)
				<-recommendationSlots
				_, _ = io.WriteString(w, "try go-201")
			default:
				http.Error(w, "recommendations: at capacity", http.StatusServiceUnavailable)
			}
		default:
			_, _ = fmt.Fprintf(w, "%s %s", service, version)
		}
	})
}

// recommendations serves this many requests at once, each taking
// recommendationTime; one more is answered 503 at once.
const (
	recommendationCapacity = 4
	recommendationTime     = 10 * time.Millisecond
)

var recommendationSlots = make(chan struct{}, recommendationCapacity)
