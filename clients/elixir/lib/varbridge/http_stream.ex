defmodule VarBridge.HTTPStream do
  @moduledoc false
  # An incremental reader of one HTTP/1.1 response, for the watch's event
  # stream: the status line and headers, then the body as it arrives
  # (chunked, Content-Length, or until the connection closes).
  #
  # Why not :httpc here: OTP 25's httpc holds back the body bytes that
  # arrive in the same read as the response headers until more bytes come
  # (with {stream, self} and {stream, {self, once}} alike). The server sends
  # its first events right behind the headers, so they would wait for the
  # next heartbeat. Unary calls go through :httpc (their bodies are whole).

  defstruct phase: :head, buf: "", status: nil, headers: [], mode: nil, left: 0

  @max_head 64 * 1024

  def new, do: %__MODULE__{}

  @doc """
  Feeds bytes; returns what they completed, in order: `{:head, status,
  headers}` (header names lowercase), `{:data, bytes}` (body bytes),
  `:done` (the body ended), or `{:error, reason}`.
  """
  def feed(%__MODULE__{} = s, bytes), do: step(%{s | buf: s.buf <> bytes}, [])

  @doc "The connection closed: ends a body read to the close."
  def closed(%__MODULE__{phase: :body, mode: :close}), do: [:done]
  def closed(%__MODULE__{phase: :done}), do: []
  def closed(%__MODULE__{}), do: [{:error, :closed}]

  defp step(%{phase: :head, buf: buf} = s, acc) do
    case :binary.split(buf, "\r\n\r\n") do
      [head, rest] ->
        case parse_head(head) do
          {:ok, status, headers} ->
            s = body_mode(%{s | status: status, headers: headers, buf: rest})
            acc = [{:head, status, headers} | acc]
            step(s, if(s.phase == :done, do: [:done | acc], else: acc))

          :error ->
            {Enum.reverse([{:error, :bad_response} | acc]), %{s | phase: :done}}
        end

      [_] when byte_size(buf) > @max_head ->
        {Enum.reverse([{:error, :head_too_large} | acc]), %{s | phase: :done}}

      [_] ->
        {Enum.reverse(acc), s}
    end
  end

  defp step(%{phase: :done} = s, acc), do: {Enum.reverse(acc), %{s | buf: ""}}
  defp step(%{buf: ""} = s, acc), do: {Enum.reverse(acc), s}

  defp step(%{phase: :body, mode: :close, buf: buf} = s, acc),
    do: step(%{s | buf: ""}, [{:data, buf} | acc])

  defp step(%{phase: :body, mode: :length, left: left, buf: buf} = s, acc) do
    n = min(left, byte_size(buf))
    <<data::binary-size(n), rest::binary>> = buf
    s = %{s | buf: rest, left: left - n}
    acc = if n > 0, do: [{:data, data} | acc], else: acc
    if s.left == 0, do: step(%{s | phase: :done}, [:done | acc]), else: step(s, acc)
  end

  # Chunked: "<hex size>[;ext]\r\n<data>\r\n", ..., "0\r\n<trailers>\r\n".
  defp step(%{phase: :body, mode: :chunked, left: 0, buf: buf} = s, acc) do
    case :binary.split(buf, "\r\n") do
      [line, rest] ->
        size = line |> String.split(";", parts: 2) |> hd() |> String.trim()

        case Integer.parse(size, 16) do
          {0, ""} -> step(%{s | phase: :done, buf: rest}, [:done | acc])
          {n, ""} when n > 0 -> step(%{s | buf: rest, left: n + 2}, acc)
          _ -> {Enum.reverse([{:error, :bad_chunk} | acc]), %{s | phase: :done}}
        end

      [_] when byte_size(buf) > 1024 ->
        {Enum.reverse([{:error, :bad_chunk} | acc]), %{s | phase: :done}}

      [_] ->
        {Enum.reverse(acc), s}
    end
  end

  # left counts the chunk's data and its closing CRLF.
  defp step(%{phase: :body, mode: :chunked, left: left, buf: buf} = s, acc) do
    n = min(left, byte_size(buf))
    <<part::binary-size(n), rest::binary>> = buf
    data_len = min(n, max(left - 2, 0))
    <<data::binary-size(data_len), _::binary>> = part
    acc = if data_len > 0, do: [{:data, data} | acc], else: acc
    step(%{s | buf: rest, left: left - n}, acc)
  end

  defp body_mode(%{status: status} = s) when status in 100..199 or status in [204, 304],
    do: %{s | phase: :done}

  defp body_mode(%{headers: h} = s) do
    cond do
      h |> header("transfer-encoding") |> to_string() |> String.downcase() =~ "chunked" ->
        %{s | phase: :body, mode: :chunked, left: 0}

      (len = header(h, "content-length")) != nil ->
        case Integer.parse(len) do
          {0, ""} -> %{s | phase: :done}
          {n, ""} when n > 0 -> %{s | phase: :body, mode: :length, left: n}
          _ -> %{s | phase: :body, mode: :close}
        end

      true ->
        %{s | phase: :body, mode: :close}
    end
  end

  def header(headers, name) do
    case List.keyfind(headers, name, 0) do
      {_, v} -> v
      nil -> nil
    end
  end

  defp parse_head(head) do
    [status_line | lines] = String.split(head, "\r\n")

    with "HTTP/1." <> <<_, " ", code::binary-size(3)>> <> _ <- status_line,
         {status, ""} <- Integer.parse(code) do
      headers =
        for line <- lines,
            [k, v] = :binary.split(line, ":") |> pad(),
            do: {String.downcase(k), String.trim(v)}

      {:ok, status, headers}
    else
      _ -> :error
    end
  end

  defp pad([k, v]), do: [k, v]
  defp pad([k]), do: [k, ""]
end
