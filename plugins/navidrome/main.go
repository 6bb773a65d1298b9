// The sonicbus plugin for Navidrome: Instant Mix, artist and album radio (MetadataAgent)
// and the OpenSubsonic sonicSimilarity endpoints (SonicSimilarity), answered by sonicbus'
// query service through its HTTP bridge.
package main

import "github.com/extism/go-pdk"

func main() {}

// run reads the input as In, calls answer, and writes its result as the output; an error
// becomes the plugin call's error (exit code 1), which Navidrome falls back from.
func run[In any, Out any](answer func(In) (Out, error)) int32 {
	var in In
	if err := pdk.InputJSON(&in); err != nil {
		pdk.Log(pdk.LogWarn, "sonicbus plugin: unreadable request from Navidrome: "+err.Error())
		pdk.SetError(err)
		return 1
	}
	out, err := answer(in)
	if err != nil {
		pdk.SetError(err)
		return 1
	}
	if err := pdk.OutputJSON(out); err != nil {
		pdk.SetError(err)
		return 1
	}
	return 0
}

func similar(op string, body similarBody) ([]sonicMatch, error) {
	s, err := loadSettings()
	if err != nil {
		return nil, fail(op, "%v", err)
	}
	body.Count = clampCount(body.Count)
	if body.Count <= 0 {
		return []sonicMatch{}, nil
	}
	body.Models, body.Diversity, body.MaxPerArtist = s.models, s.diversity, s.maxPerArtist
	body.TimeoutS = s.bridgeTimeoutS()
	answer, err := post(op, s, "/navidrome/v1/similar", body)
	if err != nil {
		return nil, err
	}
	return clean(answer.Matches), nil
}

func songs(matches []sonicMatch) *similarSongsResponse {
	out := &similarSongsResponse{Songs: make([]SongRef, 0, len(matches))}
	for _, m := range matches {
		out.Songs = append(out.Songs, m.Song)
	}
	return out
}

// -- SonicSimilarity ---------------------------------------------------------------------

//go:wasmexport nd_get_sonic_similar_tracks
func ndGetSonicSimilarTracks() int32 {
	return run(func(in getSonicSimilarTracksRequest) (sonicSimilarityResponse, error) {
		song := in.Song
		matches, err := similar("getSonicSimilarTracks", similarBody{Song: &song, Count: in.Count})
		return sonicSimilarityResponse{Matches: matches}, err
	})
}

//go:wasmexport nd_find_sonic_path
func ndFindSonicPath() int32 {
	return run(func(in findSonicPathRequest) (sonicSimilarityResponse, error) {
		const op = "findSonicPath"
		s, err := loadSettings()
		if err != nil {
			return sonicSimilarityResponse{}, fail(op, "%v", err)
		}
		count := clampCount(in.Count)
		if count <= 0 {
			return sonicSimilarityResponse{Matches: []sonicMatch{}}, nil
		}
		answer, err := post(op, s, "/navidrome/v1/path",
			pathBody{Start: in.StartSong, End: in.EndSong, Count: count, Models: s.models,
				TimeoutS: s.bridgeTimeoutS()})
		if err != nil {
			return sonicSimilarityResponse{}, err
		}
		return sonicSimilarityResponse{Matches: clean(answer.Matches)}, nil
	})
}

// -- MetadataAgent (only the similar-songs functions: Instant Mix, song/album/artist radio) --

//go:wasmexport nd_get_similar_songs_by_track
func ndGetSimilarSongsByTrack() int32 {
	return run(func(in similarSongsByTrackRequest) (*similarSongsResponse, error) {
		song := SongRef{ID: in.ID, Name: in.Name, Artist: in.Artist, MBID: in.MBID}
		matches, err := similar("similar songs by track", similarBody{Song: &song, Count: in.Count})
		return songs(matches), err
	})
}

//go:wasmexport nd_get_similar_songs_by_album
func ndGetSimilarSongsByAlbum() int32 {
	return run(func(in similarSongsByAlbumRequest) (*similarSongsResponse, error) {
		album := albumSeed{ID: in.ID, Name: in.Name, Artist: in.Artist, MBID: in.MBID}
		matches, err := similar("similar songs by album", similarBody{Album: &album, Count: in.Count})
		return songs(matches), err
	})
}

//go:wasmexport nd_get_similar_songs_by_artist
func ndGetSimilarSongsByArtist() int32 {
	return run(func(in similarSongsByArtistRequest) (*similarSongsResponse, error) {
		artist := artistSeed{ID: in.ID, Name: in.Name, MBID: in.MBID}
		matches, err := similar("similar songs by artist", similarBody{Artist: &artist, Count: in.Count})
		return songs(matches), err
	})
}
