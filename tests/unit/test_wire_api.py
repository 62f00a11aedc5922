"""One client per wire API: the exact requests each builds, what each cannot carry, which one a
run speaks. What each reads about the model from a real server: tests/integration/test_wire_api_server.py."""

import pytest

from sentinel_exp.clients import WIRE_APIS, run_apis, unsent_warning, wire_api
from sentinel_exp.clients.base import Prompt
from sentinel_exp.clients.ollama import OllamaChat, OllamaGenerate
from sentinel_exp.clients.openai import OpenAIChat
from sentinel_exp.names import Api, ServerKind

OPTIONS = {"num_ctx": 2048, "num_predict": 8, "seed": 42, "temperature": 0.7, "num_gpu": -1}


def test_ollama_chat_puts_the_system_prompt_first_and_sends_every_option_and_keep_alive():
    spec = OllamaChat().build_request("m", Prompt("hi", 3, "be brief"), OPTIONS, "5m")
    assert spec.path == "/api/chat" and spec.prompt_index == 3
    assert spec.body == {
        "model": "m",
        "stream": True,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "options": OPTIONS,
        "keep_alive": "5m",
    }


def test_ollama_chat_without_system_options_or_keep_alive_sends_only_the_prompt():
    spec = OllamaChat().build_request("m", Prompt("hi"), {}, None)
    assert spec.body == {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_ollama_generate_takes_prompt_and_system_as_fields():
    spec = OllamaGenerate().build_request("m", Prompt("hi", 1, "be brief"), OPTIONS, -1)
    assert spec.path == "/api/generate" and spec.prompt_index == 1
    assert spec.body == {
        "model": "m",
        "stream": True,
        "prompt": "hi",
        "system": "be brief",
        "options": OPTIONS,
        "keep_alive": -1,
    }
    bare = OllamaGenerate().build_request("m", Prompt("hi"), {}, None)
    assert bare.body == {"model": "m", "stream": True, "prompt": "hi"}


def test_keep_alive_zero_is_sent_not_dropped():
    assert OllamaChat().build_request("m", Prompt("hi"), {}, 0).body["keep_alive"] == 0


def test_openai_chat_maps_the_options_it_has_fields_for_and_leaves_out_the_rest():
    spec = OpenAIChat().build_request("m", Prompt("hi", 2, "be brief"), OPTIONS, "5m")
    assert spec.path == "/v1/chat/completions" and spec.prompt_index == 2
    assert spec.body == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 8,
        "seed": 42,
        "temperature": 0.7,
    }
    bare = OpenAIChat().build_request("m", Prompt("hi"), {}, None)
    assert bare.body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_only_openai_has_settings_it_cannot_send_runner_options_sorted_then_keep_alive():
    assert OllamaChat().unsendable(OPTIONS, "5m") == []
    assert OllamaGenerate().unsendable(OPTIONS, "5m") == []
    assert OpenAIChat().unsendable(OPTIONS, "5m") == ["num_ctx", "num_gpu", "keep_alive"]
    assert OpenAIChat().unsendable(OPTIONS, None) == ["num_ctx", "num_gpu"]
    assert OpenAIChat().unsendable({"num_predict": 8, "top_p": 0.9, "stop": ["\n"]}, None) == []


def test_the_registry_resolves_every_api_to_its_client():
    assert set(WIRE_APIS) == set(Api)
    for api, cls in ((Api.chat, OllamaChat), (Api.generate, OllamaGenerate), (Api.openai, OpenAIChat)):
        assert isinstance(wire_api(api), cls) and wire_api(api).name == api
        assert wire_api(api.value) is wire_api(api)  # the config's plain string works too
    assert [w.reports_server_durations for w in WIRE_APIS.values()] == [True, True, False]
    with pytest.raises(ValueError, match="completions"):
        wire_api("completions")


@pytest.mark.parametrize("workload_api", list(Api))
def test_an_openai_server_forces_the_openai_api_and_others_speak_what_the_workload_asks(workload_api):
    forced = run_apis(ServerKind.openai, workload_api)
    assert forced.requests.name == Api.openai and forced.server.name == Api.openai
    for kind in (ServerKind.ollama, ServerKind.embedded, ServerKind.simulated):
        apis = run_apis(kind, workload_api)
        # Model facts and placement still come from the Ollama API when the requests speak OpenAI.
        assert apis.requests.name == workload_api and apis.server.name == Api.chat


def test_the_unsent_warning_names_what_was_left_out_and_which_apis_could_carry_it():
    unsent = OpenAIChat().unsendable(OPTIONS, -1)
    assert unsent_warning(OpenAIChat(), unsent, OPTIONS, -1) == (
        "the OpenAI API has no field for num_ctx, num_gpu, keep_alive: not sent, the server used its own "
        "settings (use an Ollama API, workload.api=chat or generate, to send them)"
    )


TURNS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]


def test_chat_apis_send_messages_as_given_after_the_system_prompt():
    for api in (OllamaChat(), OpenAIChat()):
        spec = api.build_request("m", Prompt("", 4, "be brief", TURNS), {}, None)
        assert spec.body["messages"] == [{"role": "system", "content": "be brief"}, *TURNS]
        assert spec.prompt_index == 4
        assert api.build_request("m", Prompt("", 0, None, TURNS), {}, None).body["messages"] == TURNS


def test_generate_refuses_chat_messages_with_a_clear_message():
    with pytest.raises(ValueError, match="/api/generate takes one prompt, not chat messages"):
        OllamaGenerate().build_request("m", Prompt("", 0, None, TURNS), {}, None)
