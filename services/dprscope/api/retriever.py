"""The Retriever servicer: request -> domain call -> response, nothing more.

It serves on the event-loop server: Search and BatchSearch are coroutines that await the
encoder thread; the two store lookups are short blocking calls and run on the server's
thread pool.
"""

from __future__ import annotations

import grpc

from dprscope.api import convert
from dprscope.api.context import deadline_of
from dprscope.retrieval import RetrievalService
from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc


class RetrieverServicer(pb_grpc.RetrieverServicer):
    def __init__(self, service: RetrievalService) -> None:
        self.service = service

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        outcome = await self.service.search_async(request.query, convert.search_options(request),
                                                  deadline_of(context))
        return convert.search_response(outcome)

    async def BatchSearch(self, request: pb.BatchSearchRequest,
                          context: grpc.aio.ServicerContext) -> pb.BatchSearchResponse:
        outcomes = await self.service.batch_search_async(list(request.queries), convert.search_options(request),
                                                         deadline_of(context))
        return convert.batch_search_response(outcomes)

    def GetPassages(self, request: pb.GetPassagesRequest, context: grpc.ServicerContext) -> pb.GetPassagesResponse:
        return convert.passages_response(self.service.get_passages(list(request.ids)))

    def GetIndexInfo(self, request: pb.GetIndexInfoRequest, context: grpc.ServicerContext) -> pb.IndexInfo:
        return convert.index_info(self.service.index_info())
