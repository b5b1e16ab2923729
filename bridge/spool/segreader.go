package spool

import (
	"errors"
	"io"
	"os"
)

const readChunk = 256 << 10

// frameStatus is what segReader.read found at its offset.
type frameStatus int

const (
	frameOK  frameStatus = iota // a valid frame
	frameEnd                    // no complete frame before the limit (clean end if off == limit)
	frameBad                    // bytes that are not the next valid frame
)

// frame is one decoded frame. data aliases the reader's buffer: it is valid
// until the next call on the reader.
type frame struct {
	seq  uint64
	time int64
	data []byte
	size int64 // bytes on disk
}

// segReader reads the frames of one segment file in order through a buffer.
// Within a segment the writer numbers frames base, base+1, …; a frame is
// valid when its length is plausible, its checksum matches and its sequence
// number is the one after the previous frame. It is not safe for concurrent
// use.
type segReader struct {
	f    *os.File
	path string
	base uint64
	off  int64  // offset of the next frame
	prev uint64 // seq of the last frame consumed; base-1 before the first

	buf    []byte
	bufOff int64 // file offset of buf[0]
	bufN   int   // valid bytes in buf
}

func newSegReader(f *os.File, path string, base uint64) *segReader {
	return &segReader{f: f, path: path, base: base, off: segHeaderSize, prev: base - 1}
}

func openSegReader(path string, base uint64) (*segReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &IOError{Op: "open", Path: path, Err: err}
	}
	return newSegReader(f, path, base), nil
}

func (r *segReader) close() {
	if r != nil && r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// headerOK reports whether the segment's header is valid.
func (r *segReader) headerOK(limit int64) (bool, error) {
	h, err := r.window(0, segHeaderSize, limit)
	if err != nil || h == nil {
		return false, err
	}
	return checkSegHeader(h, r.base), nil
}

// window returns the n bytes at off, or nil if they do not all lie before
// limit (or before the end of the file). The slice is valid until the next
// call.
func (r *segReader) window(off int64, n int, limit int64) ([]byte, error) {
	if off < 0 || off+int64(n) > limit {
		return nil, nil
	}
	if off >= r.bufOff && off+int64(n) <= r.bufOff+int64(r.bufN) {
		i := int(off - r.bufOff)
		return r.buf[i : i+n], nil
	}
	size := max(n, readChunk)
	if cap(r.buf) < size || (cap(r.buf) > 4*readChunk && size == readChunk) {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:cap(r.buf)]
	want := int(min(int64(len(r.buf)), limit-off))
	m, err := r.f.ReadAt(r.buf[:want], off)
	r.bufOff, r.bufN = off, m
	if m < n {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, nil // the file is shorter than limit
		}
		r.bufN = 0
		return nil, &IOError{Op: "read", Path: r.path, Err: err}
	}
	return r.buf[:n], nil
}

// read decodes the frame at r.off without consuming it.
func (r *segReader) read(limit int64) (frame, frameStatus, error) {
	return r.frameAt(r.off, limit, r.prev+1, r.prev+1)
}

// frameAt decodes the frame at off if it is valid with a sequence number in
// [lo, hi].
func (r *segReader) frameAt(off, limit int64, lo, hi uint64) (frame, frameStatus, error) {
	h, err := r.window(off, frameHeaderSize, limit)
	if err != nil {
		return frame{}, frameBad, err
	}
	if h == nil {
		return frame{}, frameEnd, nil
	}
	length := le.Uint32(h)
	seq := le.Uint64(h[framePrefixSize:])
	if length < frameMetaSize || length > frameMetaSize+MaxRecordBytes || seq < lo || seq > hi {
		return frame{}, frameBad, nil
	}
	b, err := r.window(off, framePrefixSize+int(length), limit)
	if err != nil {
		return frame{}, frameBad, err
	}
	if b == nil {
		return frame{}, frameEnd, nil
	}
	if checksum(b[framePrefixSize:]) != le.Uint32(b[4:]) {
		return frame{}, frameBad, nil
	}
	return frame{
		seq:  seq,
		time: int64(le.Uint64(b[framePrefixSize+8:])),
		data: b[frameHeaderSize:],
		size: int64(len(b)),
	}, frameOK, nil
}

// consume moves past fr, which read returned.
func (r *segReader) consume(fr frame) {
	r.off += fr.size
	r.prev = fr.seq
}

// resync looks for the first valid frame after r.off and before limit and,
// if there is one, moves r.off to it, sets r.prev so that read returns it and
// returns true. A candidate must carry a sequence number the lost bytes could
// have held: after r.prev, and at most one more than the number of minimal
// frames that fit in between, which keeps a chance match of length, sequence
// number and CRC out of reach. The records between the old r.prev and the
// found frame are lost.
func (r *segReader) resync(limit int64) (bool, error) {
	for p := r.off + 1; p+frameHeaderSize <= limit; p++ {
		hi := r.prev + 1 + uint64(p-r.off)/frameHeaderSize
		fr, st, err := r.frameAt(p, limit, r.prev+1, hi)
		if err != nil {
			return false, err
		}
		if st == frameOK {
			r.off, r.prev = p, fr.seq-1
			return true, nil
		}
	}
	return false, nil
}

// scanResult is what a full scan of a segment found.
type scanResult struct {
	headerOK  bool
	end       int64  // offset after the last valid frame (the header size if none)
	frames    int64  // valid frames
	last      uint64 // seq of the last valid frame; base-1 if none
	firstTime int64
	lastTime  int64
	damaged   bool        // invalid bytes followed by valid frames
	lost      []LostRange // records missing between valid frames
}

// scan reads every frame of a segment of the given size. Invalid bytes are
// skipped when valid frames follow them (damage); invalid bytes that run to
// the end of the file are a torn tail, left out of end.
func (r *segReader) scan(size int64) (scanResult, error) {
	var res scanResult
	var err error
	if res.headerOK, err = r.headerOK(size); err != nil {
		return res, err
	}
	res.end, res.last = segHeaderSize, r.base-1
	for {
		fr, st, err := r.read(size)
		if err != nil {
			return res, err
		}
		if st == frameOK {
			if fr.seq != res.last+1 {
				res.lost = append(res.lost, newLostRange(res.last+1, fr.seq-1, res.lastTime, fr.time))
			}
			r.consume(fr)
			if res.frames == 0 {
				res.firstTime = fr.time
			}
			res.frames++
			res.last, res.lastTime, res.end = fr.seq, fr.time, r.off
			continue
		}
		if r.off >= size {
			return res, nil
		}
		found, err := r.resync(size)
		if err != nil || !found {
			return res, err
		}
		res.damaged = true
	}
}
