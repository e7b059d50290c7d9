package handlers

import (
	"encoding/json"
	"testing"

	"github.com/mailqueue/mailqueue/oas"
)

// TestAddressableEncodesGeneratedValues checks a generated struct passed by
// value encodes as well as by pointer, so audit callers cannot get it wrong.
func TestAddressableEncodesGeneratedValues(t *testing.T) {
	t.Parallel()
	q := oas.Queue{Name: "news", RateLimit: oas.NewOptInt(5)}
	byValue, err := json.Marshal(addressable(q))
	if err != nil {
		t.Fatalf("encoding a value: %v", err)
	}
	byPointer, err := json.Marshal(addressable(&q))
	if err != nil {
		t.Fatal(err)
	}
	if string(byValue) != string(byPointer) {
		t.Fatalf("value encodes as %s, pointer as %s", byValue, byPointer)
	}
	if addressable(nil) != nil {
		t.Fatal("nil became non-nil")
	}
}
