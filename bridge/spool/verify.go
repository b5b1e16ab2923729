package spool

import (
	"path/filepath"
)

// SegmentCheck is what Verify found in one segment file.
type SegmentCheck struct {
	Name    string
	Records int64 // valid frames
	// BadHeader: the file's header is invalid; its frames are read anyway.
	BadHeader bool
	// Lost are records missing between valid frames of the file: damage,
	// which Open or the cursors report as a LostRange (keyrelay: a gap
	// record with reason spool) before quarantining the file.
	Lost []LostRange
	// TailBytes follow the last valid frame without any valid frame after
	// them: in the last segment a torn tail, which Open cuts (records in it
	// were never confirmed); in an older one, bytes the cursors skip.
	TailBytes int64
	// Last is true for the newest segment file.
	Last bool
	Err  error // the file could not be read
}

// Damaged reports whether the check found anything wrong in the file.
func (c SegmentCheck) Damaged() bool {
	return c.BadHeader || len(c.Lost) > 0 || c.TailBytes > 0 || c.Err != nil
}

// Verify reads every frame of every segment file in dir and reports, file by
// file, what Open and the cursors will find there: damage (records lost
// between valid frames), an invalid header, bytes after the last valid
// frame. Like Inspect it takes no lock and changes nothing, so it can run
// beside the daemon that owns the directory; a batch being written at that
// moment may show as tail bytes of the last file. It reads the whole spool:
// a diagnostic (`keyrelay spool`), not for a loop.
func Verify(dir string) ([]SegmentCheck, error) {
	d, err := listDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]SegmentCheck, 0, len(d.segs))
	for i, sf := range d.segs {
		name := segName(sf.base)
		c := SegmentCheck{Name: name, Last: i == len(d.segs)-1}
		r, err := openSegReader(filepath.Join(dir, name), sf.base)
		if err != nil {
			c.Err = err
			out = append(out, c)
			continue
		}
		res, err := r.scan(sf.size)
		r.close()
		c.Err = err
		c.Records, c.BadHeader, c.Lost = res.frames, !res.headerOK, res.lost
		if err == nil {
			c.TailBytes = sf.size - res.end
		}
		out = append(out, c)
	}
	return out, nil
}
