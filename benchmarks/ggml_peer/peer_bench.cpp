// Timing harness for qwen3-tts.cpp (Danmoreng) on the random 0.6B-Base checkpoint.
// Loads the models once (load time reported separately), does `warmup` untimed syntheses,
// then `runs` timed syntheses. Prints one JSON line per run on stdout.
#include "qwen3_tts.h"
#include "gguf_loader.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char ** argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT THREADS MAX_FRAMES STREAM(0/1) CHUNK_SEC WARMUP RUNS [SEED]\n", argv[0]);
        return 2;
    }
    const std::string model_dir = argv[1], text = argv[2];
    const int threads = atoi(argv[3]), max_frames = atoi(argv[4]), stream = atoi(argv[5]);
    const float chunk_sec = (float) atof(argv[6]);
    const int warmup = atoi(argv[7]), runs = atoi(argv[8]);
    const long long seed = argc > 9 ? atoll(argv[9]) : 42;
    // optional ICL voice clone: REF_WAV REF_TEXT (prompt extracted once, like the CLI's --icl-prompt path)
    const std::string ref_wav = argc > 11 ? argv[10] : "", ref_text = argc > 11 ? argv[11] : "";

    // as the CLI does for -j: threads for the shared CPU backend, set before loading
    if (!qwen3_tts::set_cpu_thread_count(threads, true)) { fprintf(stderr, "set threads failed\n"); return 1; }
    qwen3_tts::Qwen3TTS tts;
    double t0 = now_s();
    if (!tts.load_models(model_dir)) { fprintf(stderr, "load failed: %s\n", tts.get_error().c_str()); return 1; }
    const double load_s = now_s() - t0;

    qwen3_tts::icl_prompt prompt;
    double icl_s = 0.0;
    if (!ref_wav.empty()) {
        const double ti = now_s();
        if (!tts.extract_icl_prompt(ref_wav, ref_text, prompt)) { fprintf(stderr, "icl failed: %s\n", tts.get_error().c_str()); return 1; }
        icl_s = now_s() - ti;
        fprintf(stderr, "ICL prompt: %zu floats, %d ref frames, %.3f s\n", prompt.speaker_embedding.size(), prompt.reference_codes.n_frames, icl_s);
    }
    qwen3_tts::tts_params p;
    if (!ref_wav.empty()) {
        p.reference_text = prompt.reference_text;
        p.reference_token_ids = prompt.reference_token_ids;
        p.reference_codes = prompt.reference_codes;
    }
    p.n_threads = threads;
    p.max_audio_tokens = max_frames;
    p.seed = seed;
    p.print_progress = false;
    p.print_timing = false;
    qwen3_tts::tts_streaming_params sp;
    sp.generation = p;
    sp.chunk_sec = chunk_sec;
    sp.collect_audio = true;

    for (int i = 0; i < warmup + runs; ++i) {
        double first = -1.0;
        long long samples = 0;
        const double start = now_s();
        qwen3_tts::tts_result r;
        if (stream) {
            auto cb = [&](const qwen3_tts::tts_audio_chunk & c) {
                if (first < 0) first = now_s() - start;
                samples += c.n_samples;
                return true;
            };
            r = ref_wav.empty() ? tts.synthesize_streaming(text, cb, sp)
                                : tts.synthesize_with_speaker_embedding_streaming(text, prompt.speaker_embedding, cb, sp);
        } else {
            r = ref_wav.empty() ? tts.synthesize(text, p)
                                : tts.synthesize_with_speaker_embedding(text, prompt.speaker_embedding, p);
            samples = (long long) r.audio.size();
        }
        const double wall = now_s() - start;
        if (!r.success) { fprintf(stderr, "synth failed: %s\n", r.error_msg.c_str()); return 1; }
        const int sr = r.sample_rate > 0 ? r.sample_rate : 24000;
        const double audio_s = (double) samples / sr;
        printf("{\"icl\":%s,\"warmup\":%s,\"stream\":%d,\"chunk_sec\":%.3f,\"threads\":%d,\"load_s\":%.3f,\"wall_s\":%.4f,"
               "\"first_audio_ms\":%s,\"first_codes_ms\":%lld,\"samples\":%lld,\"sample_rate\":%d,\"audio_s\":%.4f,"
               "\"frames\":%.2f,\"x_realtime\":%.4f,\"generate_ms\":%lld,\"decode_ms\":%lld}\n",
               ref_wav.empty() ? "false" : "true", i < warmup ? "true" : "false", stream, chunk_sec, threads, load_s, wall,
               first >= 0 ? std::to_string(first * 1000.0).c_str() : "null",
               (long long) r.t_ttfa_ms, samples, sr, audio_s, audio_s * 12.5, audio_s / wall,
               (long long) r.t_generate_ms, (long long) r.t_decode_ms);
        fflush(stdout);
    }
    return 0;
}
