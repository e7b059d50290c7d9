package load

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// DefaultHTMLSize makes POST /v1/emails bodies of about 2 KB.
const DefaultHTMLSize = 1536

const filler = "<p>Thank you for your order. Your receipt is attached below; reply to this email with any question.</p>\n"

// HTML returns an html body of exactly size bytes (at least the wrapper).
func HTML(size int) string {
	const head, tail = "<html><body><h1>Thanks!</h1>\n", "</body></html>"
	var b strings.Builder
	b.Grow(size)
	b.WriteString(head)
	for b.Len()+len(filler)+len(tail) <= size {
		b.WriteString(filler)
	}
	if pad := size - b.Len() - len(tail); pad > 0 {
		b.WriteString(strings.Repeat(".", pad))
	}
	b.WriteString(tail)
	return b.String()
}

// Email is the seed's example email (README "Using the API") with an html
// body of htmlSize bytes.
func Email(queue string, htmlSize int) map[string]any {
	e := map[string]any{
		"from":     map[string]string{"email": "noreply@example.com", "name": "Example App"},
		"to":       []map[string]string{{"email": "user@example.com", "name": "John Doe"}},
		"subject":  "Your receipt",
		"html":     HTML(htmlSize),
		"text":     "Thanks!",
		"headers":  map[string]string{"X-Order": "1234"},
		"metadata": map[string]string{"order_id": "1234"},
	}
	if queue != "" {
		e["queue"] = queue
	}
	return e
}

// EmailBody is Email as JSON.
func EmailBody(queue string, htmlSize int) []byte {
	b, _ := json.Marshal(Email(queue, htmlSize))
	return b
}

// BatchBody is a POST /v1/emails/batch body with n recipients sharing the
// example email's sender, subject and bodies.
func BatchBody(queue string, htmlSize, n int) []byte {
	e := Email(queue, htmlSize)
	delete(e, "to")
	emails := make([]map[string]any, n)
	for i := range emails {
		emails[i] = map[string]any{
			"to":       map[string]string{"email": "user" + strconv.Itoa(i) + "@example.com"},
			"metadata": map[string]string{"index": strconv.Itoa(i)},
		}
	}
	e["emails"] = emails
	b, _ := json.Marshal(e)
	return b
}

// ParseSize reads "2048", "2KB", "100KB", "1MB" (KB = 1024 bytes).
func ParseSize(s string) (int, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			u, mult = strings.TrimSpace(strings.TrimSuffix(u, suf.s)), suf.m
			break
		}
	}
	n, err := strconv.ParseFloat(u, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 2048, 2KB, 100KB)", s)
	}
	return int(n * float64(mult)), nil
}
