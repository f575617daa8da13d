package loadgen

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// ParseTrace reads one non-negative number per line (requests per trace
// interval). Blank lines and '#' comments (whole-line or trailing) are skipped.
func ParseTrace(r io.Reader) ([]float64, error) {
	var out []float64
	sc := bufio.NewScanner(r)
	ln := 0
	for sc.Scan() {
		ln++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		v, err := strconv.ParseFloat(line, 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("line %d: %q is not a non-negative number of requests", ln, line)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no values found (one number of requests per line expected)")
	}
	return out, nil
}

// ReadTrace reads a trace file, gunzipping it when it ends in .gz or starts
// with the gzip magic bytes.
func ReadTrace(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	magic, _ := br.Peek(2)
	if strings.HasSuffix(path, ".gz") || (len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		defer zr.Close()
		r = zr
	}
	vals, err := ParseTrace(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return vals, nil
}
