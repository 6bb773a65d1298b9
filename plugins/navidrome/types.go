package main

// The JSON shapes Navidrome 0.63.2 exchanges with plugins (plugins/types/types.go and
// plugins/capabilities/{sonic_similarity,metadata_agent}.go there), written out here so the
// plugin does not link Navidrome's GPL-3.0 PDK.

// ArtistRef is an artist as Navidrome sends and accepts it.
type ArtistRef struct {
	ID       string `json:"id,omitempty"`
	Name     string `json:"name"`
	MBID     string `json:"mbid,omitempty"`
	SortName string `json:"sortName,omitempty"`
	Role     string `json:"role,omitempty"`
	SubRole  string `json:"subRole,omitempty"`
}

// SongRef is a song as Navidrome sends and accepts it. Navidrome resolves a returned song by
// id, then MBID, then ISRC, then title + artist.
type SongRef struct {
	ID         string      `json:"id,omitempty"`
	Name       string      `json:"name"`
	MBID       string      `json:"mbid,omitempty"`
	ISRC       string      `json:"isrc,omitempty"`
	Artist     string      `json:"artist,omitempty"`
	ArtistMBID string      `json:"artistMbid,omitempty"`
	Artists    []ArtistRef `json:"artists,omitempty"`
	Album      string      `json:"album,omitempty"`
	AlbumMBID  string      `json:"albumMbid,omitempty"`
	Duration   float32     `json:"duration,omitempty"`
	DurationMs uint32      `json:"durationMs,omitempty"`
}

// SonicSimilarity (nd_get_sonic_similar_tracks, nd_find_sonic_path).

type getSonicSimilarTracksRequest struct {
	Song  SongRef `json:"song"`
	Count int32   `json:"count"`
}

type findSonicPathRequest struct {
	StartSong SongRef `json:"startSong"`
	EndSong   SongRef `json:"endSong"`
	Count     int32   `json:"count"`
}

type sonicMatch struct {
	Song       SongRef `json:"song"`
	Similarity float64 `json:"similarity"`
}

type sonicSimilarityResponse struct {
	Matches []sonicMatch `json:"matches"`
}

// MetadataAgent (nd_get_similar_songs_by_track / _by_album / _by_artist).

type similarSongsByTrackRequest struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Artist string `json:"artist"`
	MBID   string `json:"mbid,omitempty"`
	Count  int32  `json:"count"`
}

type similarSongsByAlbumRequest struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Artist string `json:"artist"`
	MBID   string `json:"mbid,omitempty"`
	Count  int32  `json:"count"`
}

type similarSongsByArtistRequest struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	MBID  string `json:"mbid,omitempty"`
	Count int32  `json:"count"`
}

type similarSongsResponse struct {
	Songs []SongRef `json:"songs"`
}

// Navidrome's HTTP host service (plugins/host/http.go): []byte travels base64-encoded.

type hostHTTPRequest struct {
	Method            string            `json:"method"`
	URL               string            `json:"url"`
	Headers           map[string]string `json:"headers,omitempty"`
	NoFollowRedirects bool              `json:"noFollowRedirects,omitempty"`
	Body              []byte            `json:"body,omitempty"`
	TimeoutMs         int32             `json:"timeoutMs,omitempty"`
}

type hostHTTPResponse struct {
	StatusCode int32             `json:"statusCode"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       []byte            `json:"body,omitempty"`
}

type hostHTTPSendRequest struct {
	Request hostHTTPRequest `json:"request"`
}

type hostHTTPSendResponse struct {
	Result *hostHTTPResponse `json:"result,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// sonicbus' endpoints for Navidrome (POST /navidrome/v1/similar and /navidrome/v1/path).

type albumSeed struct {
	ID     string `json:"id,omitempty"`
	Name   string `json:"name"`
	Artist string `json:"artist,omitempty"`
	MBID   string `json:"mbid,omitempty"`
}

type artistSeed struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
	MBID string `json:"mbid,omitempty"`
}

type similarBody struct {
	Song         *SongRef    `json:"song,omitempty"`
	Album        *albumSeed  `json:"album,omitempty"`
	Artist       *artistSeed `json:"artist,omitempty"`
	Count        int32       `json:"count"`
	Models       []string    `json:"models,omitempty"`
	Diversity    *float64    `json:"diversity,omitempty"`
	MaxPerArtist *int        `json:"max_per_artist,omitempty"`
	TimeoutS     float64     `json:"timeout_s,omitempty"`
}

type pathBody struct {
	Start    SongRef  `json:"start"`
	End      SongRef  `json:"end"`
	Count    int32    `json:"count"`
	Models   []string `json:"models,omitempty"`
	TimeoutS float64  `json:"timeout_s,omitempty"`
}

type sonicbusAnswer struct {
	Matches  []sonicMatch `json:"matches"`
	Warnings []string     `json:"warnings"`
}
