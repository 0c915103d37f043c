package meshgrpc

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc/metadata"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/telemetry"
)

// injectOutgoing returns ctx with the trace context and baggage of ctx
// appended to its outgoing gRPC metadata. It returns ctx itself, without
// allocating, when there is nothing to carry.
func injectOutgoing(t *telemetry.Tracing, ctx context.Context) context.Context {
	kv := t.OutgoingMetadata(ctx)
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// withHeaderActions returns ctx with the route's request_headers applied
// to its outgoing metadata: a copy of the caller's, so their context and
// metadata stay as they were. A route's prefix_rewrite does not apply to
// an RPC: its method is sent as the application called it.
func withHeaderActions(ctx context.Context, ha *core.HeaderActions) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx) // a copy, with lower-case keys
	if md == nil {
		md = metadata.MD{}
	}
	ha.Apply(md, core.LowerKey)
	return metadata.NewOutgoingContext(ctx, md)
}

// incomingValues is the RequestHeader reader of an RPC's context: the
// values of its incoming metadata under name.
func incomingValues(ctx any, name string) []string {
	return metadata.ValueFromIncomingContext(ctx.(context.Context), name)
}

// incomingMetadata reads the incoming gRPC metadata of a server context
// without copying it whole, for the propagator to extract the caller's
// trace context from.
type incomingMetadata struct{ ctx context.Context }

var _ propagation.TextMapCarrier = (*incomingMetadata)(nil)

func (c *incomingMetadata) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, strings.ToLower(key)); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (*incomingMetadata) Set(string, string) {}

func (c *incomingMetadata) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}
