package cardano

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HTTPSubmitter submits transactions to a Blockfrost-compatible HTTP API:
// POST {BaseURL}/tx/submit with the CBOR body (Content-Type
// application/cbor) and the project ID in the project_id header; a 200
// answer holds the transaction ID as a JSON string.
type HTTPSubmitter struct {
	// BaseURL is the API root, e.g. https://cardano-preprod.blockfrost.io/api/v0.
	BaseURL string
	// ProjectID is sent in the project_id header when set.
	ProjectID string
	// Client defaults to an http.Client with a 30 s timeout.
	Client *http.Client
}

// maxSubmitResponse bounds the answer read from the API.
const maxSubmitResponse = 64 << 10

// Submit posts one transaction.
func (s *HTTPSubmitter) Submit(ctx context.Context, txCbor []byte) error {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(s.BaseURL, "/")+"/tx/submit", bytes.NewReader(txCbor))
	if err != nil {
		return fmt.Errorf("cardano: submit: %w", err)
	}
	req.Header.Set("Content-Type", "application/cbor")
	if s.ProjectID != "" {
		req.Header.Set("project_id", s.ProjectID)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("cardano: submit: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSubmitResponse))
	if err != nil {
		return fmt.Errorf("cardano: submit: read answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		var id string
		if err := json.Unmarshal(body, &id); err != nil || len(id) != 64 {
			return fmt.Errorf("cardano: submit: unexpected answer %q", body)
		}
		return nil
	case resp.StatusCode == http.StatusBadRequest:
		return fmt.Errorf("%w: %s", ErrRejected, bytes.TrimSpace(body))
	default:
		return fmt.Errorf("cardano: submit: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
}
