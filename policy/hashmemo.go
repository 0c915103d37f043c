package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"hash"
	"reflect"
)

// hashEvery is the number of service entries between two checkpoints of
// a hashMemo.
const hashEvery = 16

// hashMemo is what Hash of a snapshot's document leaves for the hash of
// the next: SHA-256 cannot take back what it read, but it can resume from
// a state it was in. The document's JSON is its head (its fields up to
// the services), then one entry per service in name order, then the
// rest; states holds the state of the hash after the head and every
// hashEvery entries, so that the next document, whose head and first
// entries are the same, is hashed from the last state before its first
// changed entry: byte for byte the same stream, the same hash.
type hashMemo struct {
	head   []byte     // the JSON of the document through `"services":{`
	names  []string   // the services, sorted
	blocks []*Service // the snapshot's block of each name
	json   [][]byte   // the JSON of each block
	// states[c] is the marshaled state of the hash after head and the
	// entries [0, c*hashEvery).
	states [][]byte

	defaults     *Service // the snapshot's defaults block, and its JSON
	defaultsJSON []byte

	streamed int // entries the hash that made it read (not resumed), for tests
}

// errNoResume reports a document hashMemo cannot describe (no services):
// it is hashed whole.
var errNoResume = errors.New("no services to resume in")

// hashFrom returns Hash(doc) and the memo of it, resuming from prev (nil:
// from the start). names are the sorted names of doc.Services; the first
// resume entries of names are prev's, the same names with the same block
// pointers (the caller knows which it changed). doc must not be modified
// while prev or the memo returned are in use.
func hashFrom(doc *Document, names []string, prev *hashMemo, resume int) (string, *hashMemo, error) {
	m := &hashMemo{names: names}
	if len(doc.Services) == 0 || len(names) != len(doc.Services) {
		hash, err := Hash(doc)
		return hash, nil, err
	}
	h := sha256.New()
	var head bytes.Buffer
	blocks := map[*Service][]byte{}
	if prev != nil && prev.defaults != nil && prev.defaults == doc.Defaults {
		blocks[doc.Defaults] = prev.defaultsJSON
	}
	var e jsonWriter
	bp := jsonBuffers.Get().(*[]byte)
	defer func() {
		*bp = e.buf[:0]
		if cap(*bp) <= 64<<10 {
			jsonBuffers.Put(bp)
		}
	}()
	run := &resumeRun{h: h, memo: m, prev: prev, resume: resume}
	e = jsonWriter{w: &head, buf: (*bp)[:0], blocks: blocks, resume: run}
	if err := e.value(reflect.ValueOf(doc), 0); err != nil {
		hash, err := Hash(doc) // Hash says what fails
		return hash, nil, err
	}
	if err := e.flush(); err != nil {
		return "", nil, err
	}
	if !run.done {
		hash, err := Hash(doc)
		return hash, nil, err
	}
	if doc.Defaults != nil {
		m.defaults, m.defaultsJSON = doc.Defaults, blocks[doc.Defaults]
	}
	var sum [sha256.Size]byte
	return "sha256:" + hex.EncodeToString(h.Sum(sum[:0])[:8]), m, nil
}

// resumeRun is the state of hashFrom in its jsonWriter.
type resumeRun struct {
	h      hash.Hash
	memo   *hashMemo
	prev   *hashMemo
	resume int
	done   bool
}

// resumeServices writes the services of the document hashFrom hashes:
// the head written so far goes to the hash (or, when it is prev's, the
// hash resumes from prev's last state before the first changed entry),
// then the entries from there on, taking the JSON of prev's blocks from
// prev.
func (e *jsonWriter) resumeServices(m map[string]*Service, depth int) error {
	run := e.resume
	e.resume, e.blocks = nil, nil // the blocks below are written plainly
	e.buf = append(e.buf, '{')
	head, _ := e.w.(*bytes.Buffer)
	if err := e.flush(); err != nil || head == nil {
		return cmpErr(err)
	}
	memo, prev, names := run.memo, run.prev, run.memo.names
	memo.head = bytes.Clone(head.Bytes())
	memo.blocks = make([]*Service, len(names))
	memo.json = make([][]byte, len(names))
	e.w = run.h
	start := 0
	if prev != nil && len(prev.states) > 0 && bytes.Equal(memo.head, prev.head) {
		c := min(run.resume/hashEvery, len(prev.states)-1)
		if err := run.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(prev.states[c]); err != nil {
			return err
		}
		start = c * hashEvery
		memo.states = append(make([][]byte, 0, len(names)/hashEvery+1), prev.states[:c+1]...)
		copy(memo.blocks[:start], prev.blocks[:start])
		copy(memo.json[:start], prev.json[:start])
	} else {
		prev = nil
		run.h.Write(memo.head)
		state, err := marshalState(run.h)
		if err != nil {
			return err
		}
		memo.states = append(make([][]byte, 0, len(names)/hashEvery+1), state)
	}
	// The states written from here on share one array.
	var slab []byte
	if n := (len(names) - start) / hashEvery; n > 0 {
		slab = make([]byte, 0, n*len(memo.states[0]))
	}
	j := start // in prev.names: the first start names are the same
	for i := start; i < len(names); i++ {
		name := names[i]
		if i > start && i%hashEvery == 0 {
			if err := e.flush(); err != nil {
				return err
			}
			at := len(slab)
			var err error
			if slab, err = run.h.(encoding.BinaryAppender).AppendBinary(slab); err != nil {
				return err
			}
			memo.states = append(memo.states, slab[at:len(slab):len(slab)])
		}
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(name)
		e.buf = append(e.buf, ':')
		blk := m[name]
		memo.blocks[i] = blk
		if prev != nil {
			for j < len(prev.names) && prev.names[j] < name {
				j++
			}
			if j < len(prev.names) && prev.names[j] == name && prev.blocks[j] == blk {
				memo.json[i] = prev.json[j]
				e.buf = append(e.buf, prev.json[j]...)
				continue
			}
		}
		at := len(e.buf)
		e.recording++
		err := e.value(reflect.ValueOf(blk), depth+1)
		e.recording--
		if err != nil {
			return err
		}
		memo.json[i] = bytes.Clone(e.buf[at:])
		if len(e.buf) >= 4<<10 {
			if err := e.flush(); err != nil {
				return err
			}
		}
	}
	e.buf = append(e.buf, '}')
	memo.streamed = len(names) - start
	run.done = true
	return nil
}

func cmpErr(err error) error {
	if err == nil {
		return errNoResume
	}
	return err
}

// marshalState returns the state of h, a SHA-256.
func marshalState(h hash.Hash) ([]byte, error) {
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}
