// Chinese first, English on request. The choice is kept per browser.

const LANGUAGE_KEY = 'cityhub.language';

const zh = {
  'app.name': 'cityhub 城市数据与视频资源中枢',
  'app.short': 'cityhub 内江',
  'app.tagline': '部门数据共享 · 视频资源目录 · 综治中心大屏',
  'signin.token': '访问令牌',
  'signin.submit': '登录',
  'signin.out': '退出',
  'signin.hint': '令牌只保存在本标签页的会话中，关闭标签页即清除，不会出现在地址栏。',
  'signin.refused': '令牌无效、已吊销或已过期。',
  'signin.expired': '令牌已失效，请重新登录。',
  'nav.sql': 'SQL 工作台', 'nav.catalogue': '共享目录', 'nav.map': '视频地图', 'nav.kpi': '指标大屏', 'nav.audit': '审计日志',
  'role.admin': '管理员', 'role.producer': '数据提供方', 'role.analyst': '分析人员', 'role.dashboard': '大屏',
  'common.loading': '加载中…', 'common.error': '错误',
  'sql.editor': 'SQL 编辑器', 'sql.run': '运行 (Ctrl+Enter)', 'sql.cancel': '取消', 'sql.csv': '导出 CSV',
  'sql.parquet': '导出 Parquet', 'sql.table': '表格', 'sql.chart': '图表', 'sql.tables': '可查询的表',
  'sql.history': '查询历史', 'sql.running': '查询中…', 'sql.streaming': '已接收 {0} 行…',
  'sql.done': '{0} 行，用时 {1} ms', 'sql.truncated': '（仅显示前 {0} 行，完整结果请导出）',
  'sql.cancelled': '已取消（已接收 {0} 行）', 'sql.failed': '查询失败', 'sql.at': '第 {0} 行第 {1} 列',
  'sql.exporting': '正在导出…', 'sql.exported': '已导出 {0}（{1} KB）', 'sql.masked': '脱敏',
  'sql.maskedHint': '该列的值已按共享规则脱敏', 'sql.paramHint': '参数值', 'sql.rowsShort': '行',
  'chart.kind': '类型', 'chart.x': '分类 / X', 'chart.y': '数值 / Y', 'chart.bar': '柱状图', 'chart.line': '折线图',
  'chart.pie': '饼图', 'chart.first200': '图表显示前 200 行',
  'cat.datasets': '数据目录', 'cat.inbox': '待我审批', 'cat.outbox': '我的申请', 'cat.grants': '授权',
  'cat.filter': '按名称或描述筛选', 'cat.pick': '选择一个数据集查看详情', 'cat.name': '数据集', 'cat.owner': '提供部门',
  'cat.description': '描述', 'cat.classification': '分级', 'cat.sharing': '共享类型', 'cat.rows': '行数',
  'cat.access': '我的权限', 'cat.updated': '更新时间', 'cat.cycle': '更新周期', 'cat.resource': '资源代码',
  'cat.columns': '字段', 'cat.column': '字段名', 'cat.type': '类型', 'cat.nullable': '可空', 'cat.sensitivity': '敏感标签',
  'cat.snapshots': '数据量变化（快照）', 'cat.operation': '操作', 'cat.files': '文件数', 'cat.id': '编号', 'cat.requester': '申请部门', 'cat.status': '状态',
  'cat.deadline': '答复期限', 'cat.overdue': '已超期', 'cat.noRequests': '暂无申请',
  'cls.general': '一般', 'cls.important': '重要', 'cls.core': '核心',
  'share.unconditional': '无条件共享', 'share.conditional': '有条件共享', 'share.none': '不予共享',
  'access.owner': '本部门', 'access.read': '可读', 'access.granted': '已授权', 'access.apply': '可申请', 'access.out_of_scope': '超出本级范围',
  'sens.id_card': '身份证号', 'sens.phone': '电话', 'sens.person_name': '姓名', 'sens.address': '地址',
  'sens.plate_no': '车牌', 'sens.face_image': '人脸',
  'apply.title': '申请使用', 'apply.purpose': '用途', 'apply.purposeHint': '说明使用目的（必填）',
  'apply.columns': '字段', 'apply.unmasked': '申请不脱敏的字段', 'apply.unmaskedShort': '不脱敏',
  'apply.until': '使用期限至', 'apply.submit': '提交申请', 'apply.sent': '申请 #{0} 已提交，答复期限 {1}',
  'apply.all': '全部字段',
  'decide.reason': '理由（驳回时必填）', 'decide.narrow': '批准的字段（逗号分隔）',
  'decide.narrowHint': '可缩小申请的字段范围', 'decide.expires': '授权到期日', 'decide.approve': '批准',
  'decide.reject': '驳回', 'decide.revokeReason': '收回理由',
  'grant.held': '本部门获得的授权', 'grant.given': '本部门给出的授权', 'grant.holder': '获授权部门',
  'grant.expires': '到期', 'grant.active': '有效', 'grant.revoked': '已收回', 'grant.expired': '已过期',
  'grant.revoke': '收回', 'grant.none': '无',
  'status.online': '在线', 'status.offline': '离线', 'status.unknown': '未知', 'status.pending': '待审批',
  'status.approved': '已批准', 'status.rejected': '已驳回', 'status.expired': '已过期', 'status.withdrawn': '已撤回',
  'map.allCounties': '全部区县', 'map.allStatus': '全部状态', 'map.allIndustries': '全部行业', 'map.allTypes': '全部类型',
  'map.fit': '全市', 'map.count': '显示 {0} 路 / 筛选 {1} 路 / 共 {2} 路', 'map.id': '国标编码',
  'map.region': '行政区划', 'map.industry': '行业', 'map.type': '类型', 'map.network': '网络', 'map.serial': '序号',
  'map.department': '所属部门', 'map.status': '状态', 'map.since': '状态开始', 'map.keepalive': '最近心跳',
  'map.address': '安装地址', 'map.position': '位置', 'map.streams': '视频流地址',
  'map.curatedVsReported': '上报值与人工校核值', 'map.reported': '平台上报', 'map.curated': '人工校核',
  'kpi.title': '内江市社会治理中心 · 视频资源指标', 'kpi.titleRegion': '{0}综治中心 · 视频资源指标',
  'kpi.connecting': '连接中…', 'kpi.live': '● 实时', 'kpi.retrying': '重连中…', 'kpi.noLive': '无实时推送权限',
  'kpi.fullscreen': '全屏', 'kpi.online': '在线率', 'kpi.availability': '完好率（24小时）', 'kpi.completeness': '建档率',
  'kpi.channels': '通道数', 'kpi.offlineNow': '当前离线', 'kpi.byCounty': '各区县', 'kpi.byIndustry': '各行业',
  'kpi.county': '区县', 'kpi.industry': '行业', 'kpi.offline24h': '近24小时每小时离线通道数',
  'kpi.hotline': '今日12345热线受理（按类别）', 'kpi.violations': '近24小时交通违法（每小时）',
  'kpi.gridEvents': '未办结网格事件（按区县）', 'kpi.empty': '暂无数据',
  'audit.principal': '操作人', 'audit.dataset': '数据集', 'audit.anyAction': '全部操作', 'audit.since': '起始时间', 'audit.until': '截止时间',
  'audit.search': '查询', 'audit.more': '更多', 'audit.shown': '已显示 {0} 条', 'audit.at': '时间',
  'audit.action': '操作', 'audit.outcome': '结果', 'audit.sensitive': '敏感字段', 'audit.detail': '详情',
};

const en = {
  'app.name': 'cityhub: the city data and video hub',
  'app.short': 'cityhub Neijiang',
  'app.tagline': 'Department data sharing · camera catalogue · governance-centre screens',
  'signin.token': 'Access token',
  'signin.submit': 'Sign in',
  'signin.out': 'Sign out',
  'signin.hint': 'The token stays in this tab\'s session only (gone when the tab closes) and never in the address bar.',
  'signin.refused': 'The token is wrong, revoked or expired.',
  'signin.expired': 'The token is no longer valid; sign in again.',
  'nav.sql': 'SQL workbench', 'nav.catalogue': 'Catalogue', 'nav.map': 'Camera map', 'nav.kpi': 'KPI screen', 'nav.audit': 'Audit log',
  'role.admin': 'admin', 'role.producer': 'producer', 'role.analyst': 'analyst', 'role.dashboard': 'dashboard',
  'common.loading': 'Loading…', 'common.error': 'Error',
  'sql.editor': 'SQL editor', 'sql.run': 'Run (Ctrl+Enter)', 'sql.cancel': 'Cancel', 'sql.csv': 'Export CSV',
  'sql.parquet': 'Export Parquet', 'sql.table': 'Table', 'sql.chart': 'Chart', 'sql.tables': 'Your tables',
  'sql.history': 'History', 'sql.running': 'Running…', 'sql.streaming': '{0} rows so far…',
  'sql.done': '{0} rows in {1} ms', 'sql.truncated': '(the first {0} rows are shown; export for all)',
  'sql.cancelled': 'Cancelled ({0} rows received)', 'sql.failed': 'The query failed', 'sql.at': 'line {0}, column {1}',
  'sql.exporting': 'Exporting…', 'sql.exported': 'Exported {0} ({1} KB)', 'sql.masked': 'masked',
  'sql.maskedHint': 'Values of this column are masked by the sharing rules', 'sql.paramHint': 'value', 'sql.rowsShort': 'rows',
  'chart.kind': 'Chart', 'chart.x': 'Category / X', 'chart.y': 'Value / Y', 'chart.bar': 'Bar', 'chart.line': 'Line',
  'chart.pie': 'Pie', 'chart.first200': 'The chart shows the first 200 rows',
  'cat.datasets': 'Datasets', 'cat.inbox': 'Requests to us', 'cat.outbox': 'Our requests', 'cat.grants': 'Grants',
  'cat.filter': 'Filter by name or description', 'cat.pick': 'Pick a dataset to see it', 'cat.name': 'Dataset', 'cat.owner': 'Owner',
  'cat.description': 'Description', 'cat.classification': 'Classification', 'cat.sharing': 'Sharing', 'cat.rows': 'Rows',
  'cat.access': 'Access', 'cat.updated': 'Updated', 'cat.cycle': 'Update cycle', 'cat.resource': 'Resource code',
  'cat.columns': 'Columns', 'cat.column': 'Column', 'cat.type': 'Type', 'cat.nullable': 'Nullable', 'cat.sensitivity': 'Sensitivity',
  'cat.snapshots': 'Rows over time (snapshots)', 'cat.operation': 'Operation', 'cat.files': 'Files', 'cat.id': 'No.', 'cat.requester': 'Requester', 'cat.status': 'Status',
  'cat.deadline': 'Answer due', 'cat.overdue': 'overdue', 'cat.noRequests': 'No requests',
  'cls.general': 'general', 'cls.important': 'important', 'cls.core': 'core',
  'share.unconditional': 'unconditional', 'share.conditional': 'conditional', 'share.none': 'not shared',
  'access.owner': 'owner', 'access.read': 'read', 'access.granted': 'granted', 'access.apply': 'apply', 'access.out_of_scope': 'outside your region',
  'sens.id_card': 'ID number', 'sens.phone': 'phone', 'sens.person_name': 'name', 'sens.address': 'address',
  'sens.plate_no': 'plate', 'sens.face_image': 'face',
  'apply.title': 'Apply for access', 'apply.purpose': 'Purpose', 'apply.purposeHint': 'What the data is for (required)',
  'apply.columns': 'Columns', 'apply.unmasked': 'Columns asked for unmasked', 'apply.unmaskedShort': 'unmasked',
  'apply.until': 'Until', 'apply.submit': 'Apply', 'apply.sent': 'Request #{0} sent; answer due {1}',
  'apply.all': 'all columns',
  'decide.reason': 'Reason (required to reject)', 'decide.narrow': 'Columns granted (comma-separated)',
  'decide.narrowHint': 'Narrow the columns asked for', 'decide.expires': 'Grant expires', 'decide.approve': 'Approve',
  'decide.reject': 'Reject', 'decide.revokeReason': 'Why revoke',
  'grant.held': 'Grants we hold', 'grant.given': 'Grants we gave', 'grant.holder': 'Holder',
  'grant.expires': 'Expires', 'grant.active': 'active', 'grant.revoked': 'revoked', 'grant.expired': 'expired',
  'grant.revoke': 'Revoke', 'grant.none': 'None',
  'status.online': 'online', 'status.offline': 'offline', 'status.unknown': 'unknown', 'status.pending': 'pending',
  'status.approved': 'approved', 'status.rejected': 'rejected', 'status.expired': 'expired', 'status.withdrawn': 'withdrawn',
  'map.allCounties': 'All counties', 'map.allStatus': 'Any status', 'map.allIndustries': 'All industries', 'map.allTypes': 'All types',
  'map.fit': 'Whole city', 'map.count': '{0} drawn / {1} filtered / {2} channels', 'map.id': 'GB/T 28181 id',
  'map.region': 'Region', 'map.industry': 'Industry', 'map.type': 'Type', 'map.network': 'Network', 'map.serial': 'Serial',
  'map.department': 'Department', 'map.status': 'Status', 'map.since': 'Since', 'map.keepalive': 'Last keepalive',
  'map.address': 'Address', 'map.position': 'Position', 'map.streams': 'Streams',
  'map.curatedVsReported': 'Reported and curated values', 'map.reported': 'reported', 'map.curated': 'curated',
  'kpi.title': 'Neijiang governance centre · video KPIs', 'kpi.titleRegion': '{0} governance centre · video KPIs',
  'kpi.connecting': 'Connecting…', 'kpi.live': '● live', 'kpi.retrying': 'Reconnecting…', 'kpi.noLive': 'No live feed for this token',
  'kpi.fullscreen': 'Full screen', 'kpi.online': 'Online', 'kpi.availability': 'Availability (24 h)', 'kpi.completeness': 'Records complete',
  'kpi.channels': 'Channels', 'kpi.offlineNow': 'Offline now', 'kpi.byCounty': 'By county', 'kpi.byIndustry': 'By industry',
  'kpi.county': 'County', 'kpi.industry': 'Industry', 'kpi.offline24h': 'Channels going offline per hour, last 24 h',
  'kpi.hotline': '12345 hotline cases today by category', 'kpi.violations': 'Traffic violations per hour, last 24 h',
  'kpi.gridEvents': 'Open grid events by county', 'kpi.empty': 'No data',
  'audit.principal': 'Principal', 'audit.dataset': 'Dataset', 'audit.anyAction': 'Any action', 'audit.since': 'From', 'audit.until': 'Until',
  'audit.search': 'Search', 'audit.more': 'More', 'audit.shown': '{0} entries shown', 'audit.at': 'Time',
  'audit.action': 'Action', 'audit.outcome': 'Outcome', 'audit.sensitive': 'Sensitive columns', 'audit.detail': 'Detail',
};

const DICTIONARIES = { zh, en };
const listeners = new Set();

export function language() {
  return localStorage.getItem(LANGUAGE_KEY) === 'en' ? 'en' : 'zh';
}

export function setLanguage(value) {
  localStorage.setItem(LANGUAGE_KEY, value);
  document.documentElement.lang = value === 'zh' ? 'zh-CN' : 'en';
  listeners.forEach((listener) => listener(value));
}

export function onLanguage(listener) {
  listeners.add(listener);
}

/** The text of `key` in the chosen language, `{0}`, `{1}` replaced by `args`. */
export function t(key, ...args) {
  const text = DICTIONARIES[language()][key] ?? zh[key] ?? key;
  return text.replace(/\{(\d+)\}/g, (_, i) => String(args[Number(i)] ?? ''));
}

export const KEYS = { zh: Object.keys(zh), en: Object.keys(en) };
