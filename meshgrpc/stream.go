package meshgrpc

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	"github.com/inmesh/inmesh/internal/core"
)

// maxReplayBytes bounds the messages a stream keeps to replay on a retry,
// as the sum of their encoded sizes (proto.Size), like grpc-go's default
// MaxRetryRPCBufferSize: 256 KiB per stream. Once the messages sent before
// the first response pass it, the stream is committed to its attempt: the
// mesh stops keeping them and does not retry. A message that is no
// protocol buffer, whose size the mesh cannot tell, commits the stream
// too. A unary call keeps nothing (its request is the caller's) and is not
// bounded.
const maxReplayBytes = 256 << 10

// replaySize is the size of m counted against maxReplayBytes, or -1 when
// the mesh cannot tell it.
func replaySize(m any) int {
	switch m := m.(type) {
	case proto.Message:
		return proto.Size(m)
	case protoadapt.MessageV1:
		return proto.Size(protoadapt.MessageV2Of(m))
	}
	return -1
}

// streamClient is the mesh's stream client interceptor. A stream gets what a
// unary call gets (route, split, deadline, breaker, outlier reports,
// telemetry), and is retried, on the conditions of retry_on, only until its
// first response message arrives and while the messages it sent fit in
// maxReplayBytes: a retry opens a new stream on a new pick and replays the
// messages sent so far (and CloseSend), after the backoff or the server's
// pushback, as for a unary call. A stream is not retried once the
// application saw a failed SendMsg either, since it may have stopped
// sending.
func (a *adapter) streamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c, err := a.newRPCCall(ctx, cc, method, true, true)
	if c == nil {
		if err != nil {
			return nil, err
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
	if err := c.prepare(); err != nil {
		c.Finish()
		c.end(err)
		return nil, err
	}
	s := &meshStream{c: c, desc: desc, cc: cc, streamer: streamer, opts: opts[:len(opts):len(opts)]}
	// A stream whose context ends between attempts (the application gave
	// up after a failure it did not receive) still ends its call.
	s.mu.Lock()
	s.stopWatch = context.AfterFunc(c.Ctx, s.abandon)
	s.mu.Unlock()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.open(0); err != nil {
		return nil, err
	}
	return s, nil
}

// meshStream is a client stream through the mesh: one grpc.ClientStream per
// attempt, the current one receiving the application's calls. It keeps its
// own state machine (replay, commit, the end of the call on whichever
// goroutine sees it), and takes every decision from the core: Begin (pick
// slot, breaker, per-try deadline), Settle, MayRetry and Next, Backoff.
//
// Locking: sendMu serializes the sending side (SendMsg, CloseSend, and the
// opening and replay of a retry), and is held across gRPC calls; mu guards
// the fields below and the call's, and is never held across a gRPC call,
// since gRPC calls an attempt's onFinish from within its own methods.
type meshStream struct {
	c        *rpcCall
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	streamer grpc.Streamer
	opts     []grpc.CallOption

	sendMu sync.Mutex

	mu        sync.Mutex
	cur       grpc.ClientStream
	att       *streamAttempt
	sent      []any // kept for a replay until retries are over
	sentBytes int   // the replay size of sent
	closeSent bool
	committed bool        // retries are over: a response arrived, or more than maxReplayBytes was sent
	ended     bool        // the call's telemetry is recorded
	stopWatch func() bool // stops the watch of the call's context
}

var _ grpc.ClientStream = (*meshStream)(nil)

// streamAttempt is one attempt of a stream.
type streamAttempt struct {
	core.Attempt
	slot       *pickSlot
	ctx        context.Context // the attempt's, carrying the slot
	finished   bool            // onFinish ran
	out        core.Outcome    // how it ended
	err        error           // what the caller gets if it is the last attempt; nil for OK
	sendFailed bool            // the application saw SendMsg fail
}

// open starts attempts until one opens a stream, which it replays the sent
// messages on, or until the call fails. sendMu is held.
func (s *meshStream) open(waited time.Duration) error {
	c := s.c
	for {
		s.mu.Lock()
		a := &streamAttempt{slot: newPickSlot()}
		if err := c.Begin(&a.Attempt, waited); err != nil {
			s.endLocked(err)
			s.mu.Unlock()
			return err
		}
		a.slot.reset(a.Pool, c.st.Seq, a.Prev, a.Now)
		a.slot.hash, a.slot.hashed = c.Hash()
		a.ctx = withPickSlot(a.Ctx, a.slot)
		s.att = a
		s.mu.Unlock()

		opts := append(s.opts, grpc.OnFinish(func(err error) { s.onFinish(a, err) }))
		cs, err := s.streamer(a.ctx, s.desc, s.cc, c.method, opts...)
		if err == nil {
			s.mu.Lock()
			s.cur = cs
			sent, closeSent := s.sent, s.closeSent
			s.mu.Unlock()
			for _, m := range sent {
				if cs.SendMsg(m) != nil {
					break // the attempt failed: RecvMsg says how
				}
			}
			if closeSent {
				_ = cs.CloseSend()
			}
			return nil
		}
		// gRPC called onFinish before returning.
		retry, res := s.decide(a)
		if !retry {
			return res
		}
		if waited, err = s.wait(a); err != nil {
			return err
		}
	}
}

// wait waits before the retry of a and returns the time waited. A wait not
// to be waited (Backoff) ends the call with a's own failure; the end of the
// call's context during the wait ends it with that.
func (s *meshStream) wait(a *streamAttempt) (time.Duration, error) {
	wait, ok := s.c.Backoff(&a.out)
	if !ok {
		err := s.c.NotWaited(&a.out, wait, a.err)
		s.end(err)
		return 0, err
	}
	if err := s.c.Sleep(wait); err != nil {
		s.end(err)
		return 0, err
	}
	return wait, nil
}

// onFinish is called by gRPC, once, when an attempt's stream ends: it
// settles the attempt and, when no retry can follow, ends the call.
func (s *meshStream) onFinish(a *streamAttempt, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	a.out = c.outcome(&a.Attempt, a.slot, err)
	a.err = c.Settle(&a.Attempt, &a.out)
	a.finished = true
	if a.err == nil || s.committed || !c.MayRetry(&a.out) {
		s.endLocked(a.err)
	}
}

// decide says whether the finished attempt a is retried and, when not, ends
// the call with what the caller gets.
func (s *meshStream) decide(a *streamAttempt) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false, a.err
	}
	if s.committed || a.sendFailed {
		s.endLocked(a.err)
		return false, a.err
	}
	retry, res := s.c.Next(&a.out, a.err)
	if !retry {
		s.endLocked(res)
	}
	return retry, res
}

// abandon ends the call when its context ended, unless it has ended.
func (s *meshStream) abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	err := s.c.ContextFailure()
	if _, ok := err.(*statusError); !ok {
		err = grpcstatus.FromContextError(err).Err() // the caller canceled
	}
	s.endLocked(err)
}

// end ends the call with err, unless it has ended.
func (s *meshStream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(err)
}

func (s *meshStream) endLocked(err error) {
	if s.ended {
		return
	}
	s.ended = true
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.c.Finish()
	s.c.end(err)
}

// current returns the stream of the current attempt and the attempt.
func (s *meshStream) current() (grpc.ClientStream, *streamAttempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.att
}

// RecvMsg receives from the current attempt. The first message commits the
// stream: no retry after it. A failure before it is retried when the policy
// allows; the application then receives from the new attempt.
func (s *meshStream) RecvMsg(m any) error {
	for {
		cs, a := s.current()
		err := cs.RecvMsg(m)
		if err == nil {
			s.mu.Lock()
			if !s.committed {
				s.committed, s.sent, s.sentBytes = true, nil, 0
			}
			s.mu.Unlock()
			return nil
		}
		if err == io.EOF {
			return err
		}
		retried, res := s.retry(cs, a, err)
		if !retried {
			return res
		}
	}
}

// retry retries the failed attempt a, whose stream cs failed with err, if
// the policy allows; res is what the caller gets when it does not.
func (s *meshStream) retry(cs grpc.ClientStream, a *streamAttempt, err error) (retried bool, res error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.cur != cs {
		s.mu.Unlock()
		return true, nil // already replaced
	}
	if !a.finished {
		s.mu.Unlock()
		return false, err
	}
	s.mu.Unlock()
	retry, res := s.decide(a)
	if !retry {
		return false, res
	}
	wait, werr := s.wait(a) // a wait not waited returns a's failure
	if werr != nil {
		return false, werr
	}
	if err := s.open(wait); err != nil {
		return false, err
	}
	return true, nil
}

// SendMsg sends on the current attempt and keeps m for a replay until the
// stream commits. As for any gRPC stream, m must not be modified after the
// call.
func (s *meshStream) SendMsg(m any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	cs, a := s.cur, s.att
	if !s.committed {
		if n := replaySize(m); n >= 0 && s.sentBytes+n <= maxReplayBytes {
			s.sent = append(s.sent, m)
			s.sentBytes += n
		} else {
			s.committed, s.sent, s.sentBytes = true, nil, 0
		}
	}
	s.mu.Unlock()
	err := cs.SendMsg(m)
	if err != nil {
		s.mu.Lock()
		a.sendFailed = true
		s.mu.Unlock()
	}
	return err
}

// CloseSend closes the sending side of the current attempt, and of the
// attempts that replace it.
func (s *meshStream) CloseSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.closeSent = true
	cs := s.cur
	s.mu.Unlock()
	return cs.CloseSend()
}

// Header returns the current attempt's header metadata.
func (s *meshStream) Header() (metadata.MD, error) {
	cs, _ := s.current()
	return cs.Header()
}

// Trailer returns the current attempt's trailer metadata.
func (s *meshStream) Trailer() metadata.MD {
	cs, _ := s.current()
	return cs.Trailer()
}

// Context returns the current attempt's context.
func (s *meshStream) Context() context.Context {
	cs, _ := s.current()
	return cs.Context()
}
