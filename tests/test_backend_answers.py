"""llm.base.answers: every call answered once, as it finishes, a refused request without stopping the others."""

import threading
import time

import pytest

from mentalglm.llm.base import Backend, GenConfig, Generation, ModelUnavailable, Request, answers
from serve_helpers import tiny_llama  # noqa: F401  (fixture)


class Slow(Backend):
    """Answers after the number of hundredths of a second its prompt says; refuses "bad", fails on "down". Timed by
    events, not by the machine's speed: "slow" answers only once ``go`` is set, "quick" only while "slow" runs."""

    name, context_length = "slow", 4096

    def __init__(self, thread_safe: bool):
        self.thread_safe, self.batch_size, self.in_flight, self.most = thread_safe, 4, 0, 0
        self.lock = threading.Lock()
        self.started, self.go = threading.Event(), threading.Event()

    def generate(self, requests, config):
        [request] = requests
        text = request.messages[0]["content"]
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            if text == "bad":
                raise ValueError("refused: too long")
            if text == "down":
                raise ModelUnavailable("server unreachable")
            if text == "slow":
                self.started.set()
                assert self.go.wait(60)
            elif text == "quick":
                assert self.started.wait(60)
            else:
                time.sleep(int(text) / 100)
            return [Generation(text=f"answer {text}")]
        finally:
            with self.lock:
                self.in_flight -= 1


def calls(*texts, config=GenConfig()):
    return [(Request(({"role": "user", "content": t},)), config) for t in texts]


def test_a_backend_that_takes_threads_answers_as_they_finish_and_refusals_stay_per_request():
    backend = Slow(thread_safe=True)
    got = []
    for answer in answers(backend, calls("slow", "quick", "bad", "10"), refused=(ValueError,)):
        got.append(answer)
        backend.go.set()  # the slow one answers only after another answer was read
    assert [i for i, _ in got][:2] != [0, 1]  # the quick ones first, not input order
    by_index = dict(got)
    assert sorted(by_index) == [0, 1, 2, 3]
    assert isinstance(by_index[2], ValueError) and by_index[0].text == "answer slow"
    assert backend.most > 1


def test_a_one_at_a_time_backend_gets_one_call_at_a_time_and_other_errors_stop_the_run():
    backend = Slow(thread_safe=False)
    assert [i for i, _ in answers(backend, calls("3", "1", "2"))] == [0, 1, 2]
    assert backend.most == 1
    with pytest.raises(ModelUnavailable):
        list(answers(backend, calls("1", "down", "1"), refused=(ValueError,)))


def test_llama_cpp_answers_are_what_generate_writes(tiny_llama):  # noqa: F811
    config = GenConfig(max_tokens=8)
    requests = calls("你好", "今天怎么样", "写一句话", config=config)
    got = dict(answers(tiny_llama, requests))
    assert [got[i].text for i in range(3)] == [g.text for g in tiny_llama.generate([r for r, _ in requests], config)]
