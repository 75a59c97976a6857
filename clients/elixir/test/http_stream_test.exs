defmodule VarBridge.HTTPStreamTest do
  use ExUnit.Case, async: true

  alias VarBridge.HTTPStream

  # Feeds the chunks one after another; returns the items with the body
  # bytes joined, and what a close at the end adds.
  defp run(chunks, close? \\ false) do
    {items, s} =
      Enum.reduce(chunks, {[], HTTPStream.new()}, fn c, {acc, s} ->
        {items, s} = HTTPStream.feed(s, c)
        {acc ++ items, s}
      end)

    items = if close?, do: items ++ HTTPStream.closed(s), else: items
    join(items)
  end

  defp join([{:data, a}, {:data, b} | rest]), do: join([{:data, a <> b} | rest])
  defp join([x | rest]), do: [x | join(rest)]
  defp join([]), do: []

  @chunked "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" <>
             "Varbridge-Watch-Incarnation: abc\r\n\r\n" <>
             "d\r\ndata: first\n\n\r\n" <> "E;ext=1\r\ndata: second\n\n\r\n" <> "0\r\n\r\n"

  test "a chunked body, whole and split at every point: the body right behind the head comes at once" do
    want = [
      {:head, 200,
       [
         {"content-type", "text/event-stream"},
         {"transfer-encoding", "chunked"},
         {"varbridge-watch-incarnation", "abc"}
       ]},
      {:data, "data: first\n\ndata: second\n\n"},
      :done
    ]

    assert run([@chunked]) == want

    for i <- 0..byte_size(@chunked) do
      <<a::binary-size(i), b::binary>> = @chunked
      assert run([a, b]) == want, "split at #{i}"
    end

    assert run(for <<b::binary-size(1) <- @chunked>>, do: b) == want
  end

  test "the first chunk is delivered before the rest of the stream exists" do
    {items, _} =
      HTTPStream.feed(HTTPStream.new(), binary_part(@chunked, 0, byte_size(@chunked) - 26))

    assert {:data, "data: first\n\n"} in items
  end

  test "a Content-Length body (an error answer)" do
    body = ~s({"code":"not_found","message":"x"})
    resp = "HTTP/1.1 404 Not Found\r\nContent-Length: #{byte_size(body)}\r\n\r\n" <> body

    for i <- 0..byte_size(resp) do
      <<a::binary-size(i), b::binary>> = resp
      assert [{:head, 404, _}, {:data, ^body}, :done] = run([a, b])
    end
  end

  test "a body read until the connection closes; a close before the end is an error" do
    assert [{:head, 200, []}, {:data, "abc"}, :done] =
             run(["HTTP/1.0 200 OK\r\n\r\nab", "c"], true)

    assert [{:head, 200, _}, {:error, :closed}] =
             run(["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], true)

    assert [{:error, :closed}] = run(["HTTP/1.1 200"], true)
  end

  test "no body: 204 and Content-Length: 0" do
    assert [{:head, 204, _}, :done] = run(["HTTP/1.1 204 No Content\r\n\r\n"])
    assert [{:head, 500, _}, :done] = run(["HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"])
  end

  test "garbage is an error, not a crash" do
    assert [{:error, :bad_response}] = run(["SSH-2.0-OpenSSH\r\n\r\n"])

    assert [{:head, 200, _}, {:error, :bad_chunk}] =
             run(["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])

    assert [{:error, :head_too_large}] = run([String.duplicate("x", 70_000)])
  end
end
