package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one parsed sample line.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Family is one parsed metric family.
type Family struct {
	Name, Help, Type string
	Samples          []Sample
}

// Find returns the value of the first sample named name whose labels include
// all of want, and whether one was found.
func (f *Family) Find(name string, want map[string]string) (float64, bool) {
outer:
	for _, s := range f.Samples {
		if s.Name != name {
			continue
		}
		for k, v := range want {
			if s.Labels[k] != v {
				continue outer
			}
		}
		return s.Value, true
	}
	return 0, false
}

// Parse reads a text exposition strictly and checks what the format (and
// gosvc's own promise) requires: every family has HELP and TYPE before its
// samples, families are contiguous and unique, names and labels are well
// formed, no series repeats, histogram buckets are cumulative with increasing
// le ending in +Inf equal to _count, and counters are non-negative.
func Parse(r io.Reader) (map[string]*Family, error) {
	fams := map[string]*Family{}
	var order []string
	seenSeries := map[string]bool{}
	closed := map[string]bool{} // families whose sample block has ended
	current := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	ln := 0
	for sc.Scan() {
		ln++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			parts := strings.SplitN(line, " ", 4)
			if len(parts) < 3 || (parts[1] != "HELP" && parts[1] != "TYPE") {
				continue // plain comment
			}
			name := parts[2]
			if !validMetricName(name) {
				return nil, fmt.Errorf("line %d: invalid metric name %q", ln, name)
			}
			f := fams[name]
			if f == nil {
				if closed[name] {
					return nil, fmt.Errorf("line %d: family %s appears twice", ln, name)
				}
				f = &Family{Name: name}
				fams[name] = f
				order = append(order, name)
			}
			if len(f.Samples) > 0 {
				return nil, fmt.Errorf("line %d: %s for %s after its samples", ln, parts[1], name)
			}
			if current != "" && current != name {
				closed[current] = true
			}
			current = name
			text := ""
			if len(parts) == 4 {
				text = parts[3]
			}
			switch parts[1] {
			case "HELP":
				if f.Help != "" {
					return nil, fmt.Errorf("line %d: second HELP for %s", ln, name)
				}
				if text == "" {
					return nil, fmt.Errorf("line %d: empty HELP for %s", ln, name)
				}
				f.Help = text
			case "TYPE":
				if f.Type != "" {
					return nil, fmt.Errorf("line %d: second TYPE for %s", ln, name)
				}
				switch text {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fmt.Errorf("line %d: unknown type %q for %s", ln, text, name)
				}
				f.Type = text
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", ln, err)
		}
		fname := familyOf(s.Name, fams)
		f := fams[fname]
		if f == nil || f.Type == "" {
			return nil, fmt.Errorf("line %d: sample %s has no TYPE line before it", ln, s.Name)
		}
		if f.Help == "" {
			return nil, fmt.Errorf("line %d: sample %s has no HELP line before it", ln, s.Name)
		}
		if fname != current {
			return nil, fmt.Errorf("line %d: sample %s is not contiguous with family %s", ln, s.Name, fname)
		}
		key := seriesKey(s)
		if seenSeries[key] {
			return nil, fmt.Errorf("line %d: duplicate series %s", ln, key)
		}
		seenSeries[key] = true
		if f.Type == "counter" && (s.Value < 0 || math.IsNaN(s.Value)) {
			return nil, fmt.Errorf("line %d: counter %s has value %v", ln, s.Name, s.Value)
		}
		f.Samples = append(f.Samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, name := range order {
		f := fams[name]
		if f.Type == "" || f.Help == "" {
			return nil, fmt.Errorf("family %s lacks HELP or TYPE", name)
		}
		switch f.Type {
		case "histogram":
			if err := checkHistogram(f); err != nil {
				return nil, err
			}
		case "summary":
			if err := checkSummary(f); err != nil {
				return nil, err
			}
		default:
			for _, s := range f.Samples {
				if s.Name != f.Name {
					return nil, fmt.Errorf("%s family %s has sample %s", f.Type, f.Name, s.Name)
				}
			}
		}
	}
	return fams, nil
}

// familyOf maps a sample name to its family: histogram and summary samples
// carry _bucket, _sum and _count suffixes.
func familyOf(sample string, fams map[string]*Family) string {
	if f, ok := fams[sample]; ok && f.Type != "histogram" {
		return sample
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base := strings.TrimSuffix(sample, suf)
		if base == sample {
			continue
		}
		if f, ok := fams[base]; ok && (f.Type == "histogram" || f.Type == "summary") {
			if suf == "_bucket" && f.Type != "histogram" {
				continue
			}
			return base
		}
	}
	return sample
}

func seriesKey(s Sample) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(s.Name)
	for _, k := range keys {
		b.WriteString("|" + k + "=" + s.Labels[k])
	}
	return b.String()
}

func groupKey(s Sample, drop string) string {
	c := Sample{Labels: map[string]string{}}
	for k, v := range s.Labels {
		if k != drop {
			c.Labels[k] = v
		}
	}
	return seriesKey(c)
}

func checkHistogram(f *Family) error {
	type series struct {
		les      []float64
		counts   []float64
		count    float64
		hasCount bool
		hasSum   bool
	}
	groups := map[string]*series{}
	get := func(k string) *series {
		if groups[k] == nil {
			groups[k] = &series{}
		}
		return groups[k]
	}
	for _, s := range f.Samples {
		switch s.Name {
		case f.Name + "_bucket":
			leStr, ok := s.Labels["le"]
			if !ok {
				return fmt.Errorf("histogram %s: bucket without le", f.Name)
			}
			le, err := parseValue(leStr)
			if err != nil {
				return fmt.Errorf("histogram %s: bad le %q", f.Name, leStr)
			}
			g := get(groupKey(s, "le"))
			if n := len(g.les); n > 0 {
				if le <= g.les[n-1] {
					return fmt.Errorf("histogram %s: le %v not increasing", f.Name, le)
				}
				if s.Value < g.counts[n-1] {
					return fmt.Errorf("histogram %s: bucket le=%v count %v below previous %v (not cumulative)", f.Name, le, s.Value, g.counts[n-1])
				}
			}
			g.les = append(g.les, le)
			g.counts = append(g.counts, s.Value)
		case f.Name + "_count":
			g := get(groupKey(s, ""))
			g.count, g.hasCount = s.Value, true
		case f.Name + "_sum":
			get(groupKey(s, "")).hasSum = true
		default:
			return fmt.Errorf("histogram %s has sample %s", f.Name, s.Name)
		}
	}
	for k, g := range groups {
		n := len(g.les)
		if n == 0 || !math.IsInf(g.les[n-1], 1) {
			return fmt.Errorf("histogram %s%s: no +Inf bucket", f.Name, k)
		}
		if !g.hasCount || !g.hasSum {
			return fmt.Errorf("histogram %s%s: missing _count or _sum", f.Name, k)
		}
		if g.counts[n-1] != g.count {
			return fmt.Errorf("histogram %s%s: +Inf bucket %v != _count %v", f.Name, k, g.counts[n-1], g.count)
		}
	}
	return nil
}

func checkSummary(f *Family) error {
	for _, s := range f.Samples {
		switch s.Name {
		case f.Name:
			q, ok := s.Labels["quantile"]
			if !ok {
				return fmt.Errorf("summary %s: sample without quantile", f.Name)
			}
			if v, err := parseValue(q); err != nil || v < 0 || v > 1 {
				return fmt.Errorf("summary %s: bad quantile %q", f.Name, q)
			}
		case f.Name + "_sum", f.Name + "_count":
		default:
			return fmt.Errorf("summary %s has sample %s", f.Name, s.Name)
		}
	}
	return nil
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func validLabelName(s string) bool {
	return s != "" && !strings.Contains(s, ":") && validMetricName(s)
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		i++
	}
	s.Name = line[:i]
	if !validMetricName(s.Name) {
		return s, fmt.Errorf("invalid metric name %q", s.Name)
	}
	if i < len(line) && line[i] == '{' {
		i++
		for {
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			j := i
			for j < len(line) && line[j] != '=' {
				j++
			}
			name := line[i:j]
			if !validLabelName(name) {
				return s, fmt.Errorf("invalid label name %q", name)
			}
			if j+1 >= len(line) || line[j+1] != '"' {
				return s, fmt.Errorf("label %s: value not quoted", name)
			}
			j += 2
			var val strings.Builder
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
					if j >= len(line) {
						return s, fmt.Errorf("label %s: dangling escape", name)
					}
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					case '\\', '"':
						val.WriteByte(line[j])
					default:
						return s, fmt.Errorf("label %s: bad escape \\%c", name, line[j])
					}
					continue
				}
				val.WriteByte(line[j])
			}
			if j >= len(line) {
				return s, fmt.Errorf("label %s: unterminated value", name)
			}
			if _, dup := s.Labels[name]; dup {
				return s, fmt.Errorf("duplicate label %s", name)
			}
			s.Labels[name] = val.String()
			i = j + 1
			if i < len(line) && line[i] == ',' {
				i++
			} else if i >= len(line) || line[i] != '}' {
				return s, fmt.Errorf("expected , or } after label %s", name)
			}
		}
	}
	rest := strings.Fields(line[i:])
	if len(rest) < 1 || len(rest) > 2 || (i < len(line) && line[i] != ' ') {
		return s, fmt.Errorf("expected value (and optional timestamp) after %s", s.Name)
	}
	v, err := parseValue(rest[0])
	if err != nil {
		return s, fmt.Errorf("bad value %q for %s", rest[0], s.Name)
	}
	if len(rest) == 2 {
		if _, err := strconv.ParseInt(rest[1], 10, 64); err != nil {
			return s, fmt.Errorf("bad timestamp %q", rest[1])
		}
	}
	s.Value = v
	return s, nil
}
