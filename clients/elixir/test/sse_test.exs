defmodule VarBridge.SSETest do
  use ExUnit.Case, async: true

  alias VarBridge.SSE

  # Feeds the chunks one after another and collects every event.
  defp run(chunks) do
    {events, _} =
      Enum.reduce(chunks, {[], SSE.new()}, fn c, {acc, p} ->
        {evs, p} = SSE.feed(p, c)
        {acc ++ evs, p}
      end)

    events
  end

  @stream "retry: 1000\n\nevent: watching\ndata: {\"revision\":3}\n\n" <>
            "data: {\"a\":1}\n\nid: inc:4\ndata: {\"a\":2}\n\n: comment\n\n" <>
            "event: heartbeat\nid: inc:5\ndata: {\"revision\":5}\n\n"

  @want [
    %{event: "watching", data: ~s({"revision":3}), id: nil},
    %{event: "message", data: ~s({"a":1}), id: nil},
    %{event: "message", data: ~s({"a":2}), id: "inc:4"},
    %{event: "heartbeat", data: ~s({"revision":5}), id: "inc:5"}
  ]

  test "whole stream" do
    assert run([@stream]) == @want
  end

  test "every split point of the stream gives the same events" do
    for i <- 0..byte_size(@stream) do
      <<a::binary-size(i), b::binary>> = @stream
      assert run([a, b]) == @want, "split at #{i}"
    end
  end

  test "byte by byte" do
    assert run(for <<b::binary-size(1) <- @stream>>, do: b) == @want
  end

  test "CRLF and CR line ends, also split between CR and LF" do
    crlf = String.replace(@stream, "\n", "\r\n")
    cr = String.replace(@stream, "\n", "\r")
    assert run([crlf]) == @want
    assert run([cr]) == @want

    for i <- 0..byte_size(crlf) do
      <<a::binary-size(i), b::binary>> = crlf
      assert run([a, b]) == @want, "split at #{i}"
    end
  end

  test "a CR ending a chunk, then LFs in chunks of their own" do
    assert run(["data: x\r", "", "\n", "\n"]) == [%{event: "message", data: "x", id: nil}]
    assert run(["data: x\r", "\r"]) == [%{event: "message", data: "x", id: nil}]
  end

  test "multi-line data, a field without colon, no space after colon, BOM" do
    assert run([<<0xEF, 0xBB>>, <<0xBF, "data:x\ndata\ndata: y\n\n">>]) == [
             %{event: "message", data: "x\n\ny", id: nil}
           ]
  end

  test "an event not ended by a blank line is not dispatched" do
    assert run(["data: {}\n"]) == []
  end

  test "unknown fields and events without data are dropped" do
    assert run(["foo: bar\nid: 7\n\nevent: x\n\ndata: d\n\n"]) == [
             %{event: "message", data: "d", id: nil}
           ]
  end
end
