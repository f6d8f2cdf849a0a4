from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOCK_FILTER_UNSPECIFIED: _ClassVar[StockFilter]
    STOCK_FILTER_IN_STOCK: _ClassVar[StockFilter]
    STOCK_FILTER_OUT_OF_STOCK: _ClassVar[StockFilter]

class Sort(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SORT_UNSPECIFIED: _ClassVar[Sort]
    SORT_RELEVANCE: _ClassVar[Sort]
    SORT_PRICE_ASC: _ClassVar[Sort]
    SORT_PRICE_DESC: _ClassVar[Sort]

class Retrieval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_UNSPECIFIED: _ClassVar[Retrieval]
    RETRIEVAL_HYBRID: _ClassVar[Retrieval]
    RETRIEVAL_DENSE: _ClassVar[Retrieval]
    RETRIEVAL_LEXICAL: _ClassVar[Retrieval]
STOCK_FILTER_UNSPECIFIED: StockFilter
STOCK_FILTER_IN_STOCK: StockFilter
STOCK_FILTER_OUT_OF_STOCK: StockFilter
SORT_UNSPECIFIED: Sort
SORT_RELEVANCE: Sort
SORT_PRICE_ASC: Sort
SORT_PRICE_DESC: Sort
RETRIEVAL_UNSPECIFIED: Retrieval
RETRIEVAL_HYBRID: Retrieval
RETRIEVAL_DENSE: Retrieval
RETRIEVAL_LEXICAL: Retrieval

class PriceRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("category_prefix", "brands", "price", "stock")
    CATEGORY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    category_prefix: _containers.RepeatedScalarFieldContainer[str]
    brands: _containers.RepeatedScalarFieldContainer[str]
    price: PriceRange
    stock: StockFilter
    def __init__(self, category_prefix: _Optional[_Iterable[str]] = ..., brands: _Optional[_Iterable[str]] = ..., price: _Optional[_Union[PriceRange, _Mapping]] = ..., stock: _Optional[_Union[StockFilter, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "user_id", "limit", "filter", "exclude_purchased", "personalization_weight", "retrieval", "lexical_weight", "keep_duplicates", "offset", "sort", "in_stock_boost", "facets")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PURCHASED_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEEP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_BOOST_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    query: str
    user_id: str
    limit: int
    filter: Filter
    exclude_purchased: bool
    personalization_weight: float
    retrieval: Retrieval
    lexical_weight: float
    keep_duplicates: bool
    offset: int
    sort: Sort
    in_stock_boost: float
    facets: bool
    def __init__(self, query: _Optional[str] = ..., user_id: _Optional[str] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., exclude_purchased: _Optional[bool] = ..., personalization_weight: _Optional[float] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., lexical_weight: _Optional[float] = ..., keep_duplicates: _Optional[bool] = ..., offset: _Optional[int] = ..., sort: _Optional[_Union[Sort, str]] = ..., in_stock_boost: _Optional[float] = ..., facets: _Optional[bool] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "limit", "filter", "exclude_purchased", "keep_duplicates", "offset")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PURCHASED_FIELD_NUMBER: _ClassVar[int]
    KEEP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limit: int
    filter: Filter
    exclude_purchased: bool
    keep_duplicates: bool
    offset: int
    def __init__(self, user_id: _Optional[str] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., exclude_purchased: _Optional[bool] = ..., keep_duplicates: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class SimilarProductsRequest(_message.Message):
    __slots__ = ("product_id", "limit", "filter", "user_id", "personalization_weight", "keep_duplicates", "offset")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEEP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    limit: int
    filter: Filter
    user_id: str
    personalization_weight: float
    keep_duplicates: bool
    offset: int
    def __init__(self, product_id: _Optional[str] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., user_id: _Optional[str] = ..., personalization_weight: _Optional[float] = ..., keep_duplicates: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("product_id", "title", "category_path", "brand", "price", "in_stock", "score", "semantic_score", "personal_score", "lexical_score")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_PATH_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_SCORE_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    title: str
    category_path: _containers.RepeatedScalarFieldContainer[str]
    brand: str
    price: float
    in_stock: bool
    score: float
    semantic_score: float
    personal_score: float
    lexical_score: float
    def __init__(self, product_id: _Optional[str] = ..., title: _Optional[str] = ..., category_path: _Optional[_Iterable[str]] = ..., brand: _Optional[str] = ..., price: _Optional[float] = ..., in_stock: _Optional[bool] = ..., score: _Optional[float] = ..., semantic_score: _Optional[float] = ..., personal_score: _Optional[float] = ..., lexical_score: _Optional[float] = ...) -> None: ...

class FacetCount(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PriceBand(_message.Message):
    __slots__ = ("min", "max", "count")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    count: int
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class Facets(_message.Message):
    __slots__ = ("categories", "brands", "price_bands", "candidates")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_BANDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[FacetCount]
    brands: _containers.RepeatedCompositeFieldContainer[FacetCount]
    price_bands: _containers.RepeatedCompositeFieldContainer[PriceBand]
    candidates: int
    def __init__(self, categories: _Optional[_Iterable[_Union[FacetCount, _Mapping]]] = ..., brands: _Optional[_Iterable[_Union[FacetCount, _Mapping]]] = ..., price_bands: _Optional[_Iterable[_Union[PriceBand, _Mapping]]] = ..., candidates: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "model_version", "index_version", "personalization_weight", "user_interactions", "retrieval", "lexical_weight", "strategy", "facets", "request_id")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    USER_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model_version: str
    index_version: str
    personalization_weight: float
    user_interactions: int
    retrieval: Retrieval
    lexical_weight: float
    strategy: str
    facets: Facets
    request_id: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model_version: _Optional[str] = ..., index_version: _Optional[str] = ..., personalization_weight: _Optional[float] = ..., user_interactions: _Optional[int] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., lexical_weight: _Optional[float] = ..., strategy: _Optional[str] = ..., facets: _Optional[_Union[Facets, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
