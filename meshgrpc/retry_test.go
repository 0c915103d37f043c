package meshgrpc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/mesh"
)

// backoffPolicy gives billing three attempts on unavailable with backoff
// (a YAML flow mapping).
func backoffPolicy(backoff string) func(addrs ...string) string {
	return billingPolicy("    retry: {attempts: 3, backoff: " + backoff + ", retry_on: [unavailable]}\n")
}

// busyOnce answers the first Check Unavailable "busy" with the trailer
// grpc-retry-pushback-ms set to values (none when empty), and SERVING after.
func busyOnce(values ...string) checkFunc {
	return func(ctx context.Context, n int64) (*healthpb.HealthCheckResponse, error) {
		if n > 1 {
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		}
		md := metadata.MD{}
		for _, v := range values {
			md.Append("grpc-retry-pushback-ms", v)
		}
		_ = grpc.SetTrailer(ctx, md)
		return nil, grpcstatus.Error(codes.Unavailable, "busy")
	}
}

// guarded returns a context without a deadline (so that the mesh would
// wait any backoff), canceled when the test ends or, so that a call parked
// on the fake clock fails the test instead of hanging it, after 20 seconds.
func guarded(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	stop := time.AfterFunc(20*time.Second, cancel)
	t.Cleanup(func() {
		stop.Stop()
		cancel()
	})
	return ctx
}

// isBusy reports whether err is the backend's own "busy" status, unchanged.
func isBusy(err error) bool {
	st, ok := grpcstatus.FromError(err)
	return ok && st.Code() == codes.Unavailable && st.Message() == "busy" && FromStatus(err) == nil
}

// TestGRPCRetryPushback checks that a server's grpc-retry-pushback-ms
// replaces the backoff of a unary call, or stops its retries. The caller's
// mesh runs on a fake clock that never moves and the call has no deadline:
// a retry that waited anything would stay parked, so each case also proves
// that nothing was waited.
func TestGRPCRetryPushback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backoff  string
		pushback []string // the first answer's trailer values
		wantHits int64    // the retry, if any, succeeds
	}{
		// 0 is "retry now", where the backoff (up to an hour) would wait.
		{"zero retries at once", "{initial: 1h, max: 1h}", []string{"0"}, 2},
		{"negative stops the retries", "{initial: 1ms, max: 2ms}", []string{"-1"}, 1},
		{"malformed stops the retries", "{initial: 1ms, max: 2ms}", []string{"soon"}, 1},
		{"repeated stops the retries", "{initial: 1ms, max: 2ms}", []string{"0", "0"}, 1},
		// A pushback longer than the backoff max: TestRetryHintLongerThanBackoffMaxIsNotWaited.
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newGRPCBackend(t, "busy")
			b.onCheck(busyOnce(tc.pushback...))
			f := startBilling(t, backoffPolicy(tc.backoff), b)
			fc := clocktest.NewFake(time.Now())
			c := dial(t, f.client(t, "enrollment", withClock(fc)), "billing")
			_, err := check(guarded(t), c)
			if hits := b.Hits.Load(); hits != tc.wantHits {
				t.Fatalf("the backend was called %d times, want %d (err %v)", hits, tc.wantHits, err)
			}
			if tc.wantHits > 1 && err != nil {
				t.Fatalf("the retry failed: %v", err)
			}
			if tc.wantHits == 1 && !isBusy(err) {
				t.Fatalf("err %v, want the backend's own Unavailable \"busy\"", err)
			}
		})
	}
}

// TestGRPCStreamRetryPushback checks a pushback on a stream that failed
// before its first response, on a fake clock that never moves, without a
// deadline, as TestGRPCRetryPushback does for unary calls.
func TestGRPCStreamRetryPushback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backoff  string
		pushback string
		wantHits int64
	}{
		{"zero retries at once", "{initial: 1h, max: 1h}", "0", 2},
		{"negative stops the retries", "{initial: 1ms, max: 2ms}", "-1", 1},
		{"longer than the backoff max is not waited", "{initial: 1ms, max: 2ms}", "60000", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newGRPCBackend(t, "busy")
			b.onWatch(func(n int64, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
				if n == 1 {
					stream.SetTrailer(metadata.Pairs("grpc-retry-pushback-ms", tc.pushback))
					return grpcstatus.Error(codes.Unavailable, "busy")
				}
				return stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
			})
			f := startBilling(t, backoffPolicy(tc.backoff), b)
			fc := clocktest.NewFake(time.Now())
			c := dial(t, f.client(t, "enrollment", withClock(fc)), "billing")
			w, err := c.Watch(guarded(t), &healthpb.HealthCheckRequest{Service: "billing"})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := w.Recv()
			if hits := b.Hits.Load(); hits != tc.wantHits {
				t.Fatalf("%d stream attempts, want %d (err %v)", hits, tc.wantHits, err)
			}
			if tc.wantHits > 1 && (err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING) {
				t.Fatalf("the retried stream: %v %v", resp, err)
			}
			if tc.wantHits == 1 && !isBusy(err) {
				t.Fatalf("err %v, want the backend's own Unavailable \"busy\"", err)
			}
		})
	}
}

// TestGRPCStreamBackoffPastDeadline checks that a stream whose backoff
// would outlive the call's deadline returns its failure, as a unary call
// does, rather than being retried without the wait.
func TestGRPCStreamBackoffPastDeadline(t *testing.T) {
	b := newGRPCBackend(t, "busy")
	b.onWatch(func(int64, grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
		return grpcstatus.Error(codes.Unavailable, "busy")
	})
	f := startBilling(t, backoffPolicy("{initial: 1h, max: 1h}"), b)
	// The fake clock makes the backoff outlive the deadline for certain: it
	// reads a day past the deadline.
	fc := clocktest.NewFake(time.Now().Add(24 * time.Hour))
	c := dial(t, f.client(t, "enrollment", withClock(fc)), "billing")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if !isBusy(err) || b.Hits.Load() != 1 {
		t.Fatalf("err %v after %d attempts, want the first attempt's Unavailable \"busy\"", err, b.Hits.Load())
	}
}

// uploadMethod is the client-streaming RPC of the upload test service:
// BytesValue messages in, their count (Int64Value) out.
const uploadMethod = "/inmesh.test.Upload/Upload"

// uploadServer receives uploads: it reads every message of a stream, then
// fails the first stream Unavailable and answers the others with the count
// of messages they carried, which it keeps.
type uploadServer struct {
	Hits atomic.Int64 // streams that reached the handler

	mu  sync.Mutex
	got [][]byte // the messages of the last stream answered
}

var uploadDesc = grpc.ServiceDesc{
	ServiceName: "inmesh.test.Upload",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Upload",
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(*uploadServer).upload(stream)
		},
	}},
}

func (u *uploadServer) upload(stream grpc.ServerStream) error {
	n := u.Hits.Add(1)
	var got [][]byte
	for {
		m := new(wrapperspb.BytesValue)
		if err := stream.RecvMsg(m); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		got = append(got, m.GetValue())
	}
	if n == 1 {
		return grpcstatus.Error(codes.Unavailable, "busy")
	}
	u.mu.Lock()
	u.got = got
	u.mu.Unlock()
	return stream.SendMsg(wrapperspb.Int64(int64(len(got))))
}

// startUpload serves an uploadServer on 127.0.0.1 as billing's endpoint
// under the policy policyFor gives for its address, behind billing's mesh,
// until the test ends. It returns the server and a connection to billing
// from enrollment's mesh.
func startUpload(t *testing.T, policyFor func(addrs ...string) string) (*uploadServer, *grpc.ClientConn) {
	t.Helper()
	ln := listenLoopback(t)
	pol := policyFor(ln.Addr().String())
	u := &uploadServer{}
	srv := grpc.NewServer(ServerOptions(newTestMesh(t, pol, mesh.WithService("billing")))...)
	srv.RegisterService(&uploadDesc, u)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	conn, err := grpc.NewClient("mesh:///billing", DialOptions(newTestMesh(t, pol, mesh.WithService("enrollment")))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return u, conn
}

// upload sends msgs on a new upload stream of conn, closes its sending side
// and returns the count the server answered.
func upload(ctx context.Context, conn *grpc.ClientConn, msgs []*wrapperspb.BytesValue) (int64, error) {
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, uploadMethod)
	if err != nil {
		return 0, err
	}
	for i, m := range msgs {
		if err := cs.SendMsg(m); err != nil {
			return 0, fmt.Errorf("SendMsg %d: %w", i, err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		return 0, err
	}
	var count wrapperspb.Int64Value
	if err := cs.RecvMsg(&count); err != nil {
		return 0, err
	}
	return count.GetValue(), nil
}

// uploadOf returns n messages of size bytes of value each (so that
// proto.Size of each is more), message i filled with byte i.
func uploadOf(n, size int) []*wrapperspb.BytesValue {
	msgs := make([]*wrapperspb.BytesValue, n)
	for i := range msgs {
		msgs[i] = wrapperspb.Bytes(bytes.Repeat([]byte{byte(i)}, size))
	}
	return msgs
}

// TestGRPCStreamReplayBoundedByBytes checks that a stream keeps the
// messages it sent for a replay while they total at most 256 KiB (proto
// sizes), however many they are, and is committed (not retried) once they
// pass it, however few they are. The server fails the first stream after
// reading all of it.
func TestGRPCStreamReplayBoundedByBytes(t *testing.T) {
	// The limit, as grpc-go's default; a BytesValue of n bytes, n < 2^21,
	// encodes in 1 + 3 + n bytes.
	const limit, tag = 256 << 10, 1 + 3
	for _, tc := range []struct {
		name    string
		msgs    []*wrapperspb.BytesValue
		retried bool
	}{
		{"many small messages under the limit", uploadOf(200, 1024), true},
		{"exactly the limit", uploadOf(1, limit-tag), true},
		{"a byte over the limit", uploadOf(1, limit-tag+1), false},
		{"a few large messages over the limit", uploadOf(5, 64<<10), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for _, m := range tc.msgs {
				total += proto.Size(m)
			}
			t.Logf("%d messages, %d bytes", len(tc.msgs), total)
			u, conn := startUpload(t, backoffPolicy("{initial: 1ms, max: 2ms}"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			count, err := upload(ctx, conn, tc.msgs)
			if !tc.retried {
				if !isBusy(err) || u.Hits.Load() != 1 {
					t.Fatalf("err %v after %d attempts, want the first attempt's Unavailable \"busy\"", err, u.Hits.Load())
				}
				return
			}
			if err != nil || u.Hits.Load() != 2 || count != int64(len(tc.msgs)) {
				t.Fatalf("count %d, err %v after %d attempts; want %d after 2", count, err, u.Hits.Load(), len(tc.msgs))
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			for i, m := range tc.msgs {
				if !bytes.Equal(u.got[i], m.GetValue()) {
					t.Fatalf("message %d was replayed as %d bytes, want its %d", i, len(u.got[i]), len(m.GetValue()))
				}
			}
		})
	}
}

func TestReplaySize(t *testing.T) {
	m := wrapperspb.Bytes(make([]byte, 100))
	if got := replaySize(m); got != proto.Size(m) || got != 1+1+100 {
		t.Fatalf("replaySize of a proto message: %d, want %d", got, proto.Size(m))
	}
	if got := replaySize(struct{}{}); got != -1 {
		t.Fatalf("replaySize of a message that is no proto: %d, want -1", got)
	}
}
