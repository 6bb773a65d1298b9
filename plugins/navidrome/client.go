package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/extism/go-pdk"
)

// Navidrome's HTTP host service (permission "http"): unlike Extism's own http_request it
// takes a per-request timeout, so a slow sonicbus becomes an error, never a hang.
//
//go:wasmimport extism:host/user http_send
func hostHTTPSend(uint64) uint64

const (
	defaultTimeoutMs = 5000
	// Navidrome stops any plugin call after 30 s (plugins/manager.go defaultTimeout).
	maxTimeoutMs = 25000
	// Navidrome's own limit on a response body is 10 MB; a sonicbus answer is far smaller.
	maxCount = 500
)

// settings is the plugin's configuration (the manifest's config schema), read at each
// call: Navidrome applies a config change without a restart.
type settings struct {
	url          string
	token        string
	models       []string
	timeoutMs    int32
	diversity    *float64
	maxPerArtist *int
}

func loadSettings() (settings, error) {
	s := settings{timeoutMs: defaultTimeoutMs}
	url, _ := pdk.GetConfig("sonicbus_url")
	s.url = strings.TrimRight(strings.TrimSpace(url), "/")
	if s.url == "" {
		return s, errors.New("sonicbus_url is not configured (plugin settings in Navidrome)")
	}
	if !strings.HasPrefix(s.url, "http://") && !strings.HasPrefix(s.url, "https://") {
		return s, fmt.Errorf("sonicbus_url %q must start with http:// or https://", s.url)
	}
	token, _ := pdk.GetConfig("token")
	s.token = strings.TrimSpace(token)
	if raw, ok := pdk.GetConfig("models"); ok {
		s.models = parseModels(raw)
	}
	if raw, ok := pdk.GetConfig("timeout_ms"); ok && strings.TrimSpace(raw) != "" {
		ms, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || ms <= 0 {
			return s, fmt.Errorf("timeout_ms %q is not a positive number", raw)
		}
		s.timeoutMs = int32(min(ms, maxTimeoutMs))
	}
	if raw, ok := pdk.GetConfig("diversity"); ok && strings.TrimSpace(raw) != "" {
		d, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || d < 0 || d > 1 {
			return s, fmt.Errorf("diversity %q is not a number in [0, 1]", raw)
		}
		s.diversity = &d
	}
	if raw, ok := pdk.GetConfig("max_per_artist"); ok && strings.TrimSpace(raw) != "" {
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || n < 0 {
			return s, fmt.Errorf("max_per_artist %q is not a whole number >= 0", raw)
		}
		if n > 0 {
			s.maxPerArtist = &n
		}
	}
	return s, nil
}

// bridgeTimeoutS is the deadline the plugin gives sonicbus' bridge (its body's timeout_s):
// a little shorter than the plugin's own, so a query service that does not answer comes
// back as sonicbus' 504, and the plugin still ends at timeout_ms if the bridge does not.
func (s settings) bridgeTimeoutS() float64 {
	ms := max(float64(s.timeoutMs)-250, float64(s.timeoutMs)*0.8)
	return float64(int(ms)) / 1000
}

// parseModels reads "musicnn,muq" or a JSON list (Navidrome passes a non-string config
// value as its JSON text).
func parseModels(raw string) []string {
	raw = strings.TrimSpace(raw)
	var models []string
	if strings.HasPrefix(raw, "[") {
		if json.Unmarshal([]byte(raw), &models) == nil {
			return models
		}
		raw = strings.Trim(raw, "[]")
	}
	for _, m := range strings.Split(raw, ",") {
		if m = strings.Trim(strings.TrimSpace(m), `"`); m != "" {
			models = append(models, m)
		}
	}
	return models
}

// callError is a failed call to sonicbus, already logged.
type callError struct{ msg string }

func (e *callError) Error() string { return e.msg }

// fail logs the one line that says why a call gave no answer, and returns it as the error
// Navidrome receives (it then falls back to its other agents or answers empty). No elapsed
// time: a plugin's clock under Navidrome's wasm runtime does not advance during host calls.
func fail(op string, format string, args ...any) error {
	msg := fmt.Sprintf("sonicbus plugin: %s gave no answer: %s", op, fmt.Sprintf(format, args...))
	pdk.Log(pdk.LogWarn, msg)
	return &callError{msg}
}

// post sends body to {sonicbus_url}{path} and decodes sonicbus' answer. Nothing is cached:
// every call asks sonicbus.
func post(op string, s settings, path string, body any) (sonicbusAnswer, error) {
	var answer sonicbusAnswer
	payload, err := json.Marshal(body)
	if err != nil {
		return answer, fail(op, "cannot encode the request: %v", err)
	}
	headers := map[string]string{"Content-Type": "application/json", "Accept": "application/json"}
	if s.token != "" {
		headers["Authorization"] = "Bearer " + s.token
	}
	request, _ := json.Marshal(hostHTTPSendRequest{Request: hostHTTPRequest{
		Method:            "POST",
		URL:               s.url + path,
		Headers:           headers,
		NoFollowRedirects: true,
		Body:              payload,
		TimeoutMs:         s.timeoutMs,
	}})
	in := pdk.AllocateBytes(request)
	out := pdk.FindMemory(hostHTTPSend(in.Offset()))
	in.Free()
	raw := out.ReadBytes()
	out.Free()
	var sent hostHTTPSendResponse
	if err := json.Unmarshal(raw, &sent); err != nil {
		return answer, fail(op, "Navidrome's HTTP service gave an unreadable reply: %v", err)
	}
	if sent.Error != "" || sent.Result == nil {
		reason := sent.Error
		if strings.Contains(reason, "deadline exceeded") || strings.Contains(reason, "Client.Timeout") {
			reason = fmt.Sprintf("no reply from %s within timeout_ms=%d", s.url, s.timeoutMs)
		} else if strings.Contains(reason, "not allowed") {
			reason += " (the plugin's manifest must list sonicbus' host under permissions.http.requiredHosts: reinstall it with `sonicbus navidrome install-plugin`)"
		}
		return answer, fail(op, "%s", reason)
	}
	status := sent.Result.StatusCode
	if status != 200 {
		detail := strings.TrimSpace(string(sent.Result.Body))
		if len(detail) > 300 {
			detail = detail[:300] + "..."
		}
		hint := ""
		if status == 401 || status == 403 {
			hint = " (check the plugin's token: it must be sonicbus' client token)"
		}
		return answer, fail(op, "%s%s answered HTTP %d%s: %s", s.url, path, status, hint, detail)
	}
	if err := json.Unmarshal(sent.Result.Body, &answer); err != nil {
		return answer, fail(op, "%s%s answered something that is not sonicbus' JSON: %v", s.url, path, err)
	}
	if len(answer.Warnings) > 0 {
		pdk.Log(pdk.LogInfo, fmt.Sprintf("sonicbus plugin: %s: %s", op, strings.Join(answer.Warnings, "; ")))
	}
	return answer, nil
}

// clampCount keeps count inside what sonicbus serves; 0 or less asks for nothing.
func clampCount(count int32) int32 {
	return min(count, maxCount)
}

// clean drops matches without a song and keeps similarity within [0, 1].
func clean(matches []sonicMatch) []sonicMatch {
	out := make([]sonicMatch, 0, len(matches))
	for _, m := range matches {
		if m.Song.ID == "" && m.Song.Name == "" {
			continue
		}
		m.Similarity = max(0, min(1, m.Similarity))
		out = append(out, m)
	}
	return out
}
