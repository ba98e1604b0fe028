<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="zh_CN">
  <context>
    <name>GeoReasoner</name>
    <message>
      <source>Advanced</source>
      <translation>高级</translation>
    </message>
    <message>
      <source> px</source>
      <translation> 像素</translation>
    </message>
    <message>
      <source>Contour polygons smaller than this many image pixels are dropped</source>
      <translation>小于此像素数的轮廓多边形将被丢弃</translation>
    </message>
    <message>
      <source>Minimum area</source>
      <translation>最小面积</translation>
    </message>
    <message>
      <source>Simplification</source>
      <translation>简化</translation>
    </message>
    <message>
      <source>Temperature</source>
      <translation>温度</translation>
    </message>
    <message>
      <source>none</source>
      <translation>无</translation>
    </message>
    <message>
      <source>Seed</source>
      <translation>随机种子</translation>
    </message>
    <message>
      <source>Token limit</source>
      <translation>令牌上限</translation>
    </message>
    <message>
      <source>Draw</source>
      <translation>绘制</translation>
    </message>
    <message>
      <source>Draw the area on the map (polygon: click the corners, right-click to end)</source>
      <translation>在地图上绘制区域（多边形：逐个点击角点，右键结束）</translation>
    </message>
    <message>
      <source>Visible map extent</source>
      <translation>当前可见地图范围</translation>
    </message>
    <message>
      <source>Whole raster</source>
      <translation>整个栅格</translation>
    </message>
    <message>
      <source>Drawn rectangle</source>
      <translation>绘制的矩形</translation>
    </message>
    <message>
      <source>Drawn polygon</source>
      <translation>绘制的多边形</translation>
    </message>
    <message>
      <source>Selected features, one question each</source>
      <translation>所选要素，每个要素提问一次</translation>
    </message>
    <message>
      <source>Selected features, all in one</source>
      <translation>所选要素，合并提问一次</translation>
    </message>
    <message>
      <source>Extent of a layer</source>
      <translation>某图层的范围</translation>
    </message>
    <message>
      <source>Choose a layer for the area.</source>
      <translation>请为区域选择一个图层。</translation>
    </message>
    <message>
      <source>Choose a polygon layer for the area.</source>
      <translation>请为区域选择一个面图层。</translation>
    </message>
    <message>
      <source>visible map</source>
      <translation>可见地图</translation>
    </message>
    <message>
      <source>Choose the raster whose whole extent to ask about.</source>
      <translation>请选择要对其整个范围提问的栅格。</translation>
    </message>
    <message>
      <source>Draw the area on the map first (Draw, then click on the map).</source>
      <translation>请先在地图上绘制区域（点击“绘制”，然后在地图上点击）。</translation>
    </message>
    <message>
      <source>drawn area</source>
      <translation>绘制的区域</translation>
    </message>
    <message>
      <source>Select one or more features of {0} first (Select Features tool).</source>
      <translation>请先选择 {0} 的一个或多个要素（使用“选择要素”工具）。</translation>
    </message>
    <message>
      <source>{0} #{1}</source>
      <translation>{0} #{1}</translation>
    </message>
    <message>
      <source>whole {0}</source>
      <translation>整个 {0}</translation>
    </message>
    <message>
      <source>extent of {0}</source>
      <translation>{0} 的范围</translation>
    </message>
    <message>
      <source>{0} features of {1}</source>
      <translation>{1} 的 {0} 个要素</translation>
    </message>
    <message>
      <source>Undone.</source>
      <translation>已撤销。</translation>
    </message>
    <message>
      <source>Object deleted.</source>
      <translation>对象已删除。</translation>
    </message>
    <message>
      <source>Positive point added.</source>
      <translation>已添加正向点。</translation>
    </message>
    <message>
      <source>Negative point added.</source>
      <translation>已添加负向点。</translation>
    </message>
    <message>
      <source>New box.</source>
      <translation>已设置新框。</translation>
    </message>
    <message>
      <source>Object added.</source>
      <translation>已添加对象。</translation>
    </message>
    <message>
      <source>No object here. Click an object of the answer, or drag a box to add one.</source>
      <translation>此处没有对象。请点击回答中的一个对象，或拖出一个框来添加对象。</translation>
    </message>
    <message>
      <source>Object {0} selected: left click adds a point inside it, right click a point outside it, a drag gives it a new box.</source>
      <translation>已选择对象 {0}：左键点击添加对象内部的点，右键点击添加对象外部的点，拖动则为其设置新框。</translation>
    </message>
    <message>
      <source>GeoReasoner</source>
      <translation>GeoReasoner</translation>
    </message>
    <message>
      <source>Ask the imagery, e.g. which lakes could supply irrigation water?</source>
      <translation>向影像提问，例如：哪些湖泊可以为周边农田提供灌溉用水？</translation>
    </message>
    <message>
      <source>Boxes</source>
      <translation>边框</translation>
    </message>
    <message>
      <source>Points</source>
      <translation>点</translation>
    </message>
    <message>
      <source>Mask</source>
      <translation>掩膜</translation>
    </message>
    <message>
      <source>Contours</source>
      <translation>轮廓</translation>
    </message>
    <message>
      <source>Outputs</source>
      <translation>输出</translation>
    </message>
    <message>
      <source>The map as displayed</source>
      <translation>当前显示的地图</translation>
    </message>
    <message>
      <source>A raster, pixel for pixel</source>
      <translation>某个栅格（逐像素）</translation>
    </message>
    <message>
      <source>What the model sees: the rendered map at screen resolution, or one raster at its own (or the chosen ground) resolution</source>
      <translation>模型看到的内容：按屏幕分辨率渲染的地图，或按栅格自身（或所选地面）分辨率读取的单个栅格</translation>
    </message>
    <message>
      <source>Read</source>
      <translation>读取</translation>
    </message>
    <message>
      <source>Raster</source>
      <translation>栅格</translation>
    </message>
    <message>
      <source>native</source>
      <translation>原始</translation>
    </message>
    <message>
      <source>Ground resolution</source>
      <translation>地面分辨率</translation>
    </message>
    <message>
      <source>Area</source>
      <translation>区域</translation>
    </message>
    <message>
      <source>backend default</source>
      <translation>后端默认</translation>
    </message>
    <message>
      <source>Refresh</source>
      <translation>刷新</translation>
    </message>
    <message>
      <source>Ask the backend for its state, models and profiles</source>
      <translation>向后端查询其状态、模型和配置</translation>
    </message>
    <message>
      <source>Profile</source>
      <translation>配置</translation>
    </message>
    <message>
      <source>asking the backend...</source>
      <translation>正在询问后端……</translation>
    </message>
    <message>
      <source>Models</source>
      <translation>模型</translation>
    </message>
    <message>
      <source>Zoom to each new answer</source>
      <translation>缩放到每个新回答</translation>
    </message>
    <message>
      <source>Zooming changes the visible extent, and with it the area of the next question</source>
      <translation>缩放会改变可见范围，从而改变下一个问题的区域</translation>
    </message>
    <message>
      <source>Ask</source>
      <translation>提问</translation>
    </message>
    <message>
      <source>Cancel</source>
      <translation>取消</translation>
    </message>
    <message>
      <source>Ready.</source>
      <translation>就绪。</translation>
    </message>
    <message>
      <source>Cancelling...</source>
      <translation>正在取消...</translation>
    </message>
    <message>
      <source>Correcting: click an object of the answer, then add points (left: inside, right: outside) or drag a new box; drag on empty ground adds an object; Delete, Ctrl+Z.</source>
      <translation>修正中：点击回答中的一个对象，然后添加点（左键：内部，右键：外部）或拖出新框；在空白处拖动可添加对象；Delete 删除，Ctrl+Z 撤销。</translation>
    </message>
    <message>
      <source>Reasoning</source>
      <translation>推理过程</translation>
    </message>
    <message>
      <source>Answers</source>
      <translation>答案</translation>
    </message>
    <message>
      <source>Choose a raster layer to read, or read the map as displayed.</source>
      <translation>请选择要读取的栅格图层，或读取当前显示的地图。</translation>
    </message>
    <message>
      <source>Choose at least one output.</source>
      <translation>请至少选择一种输出。</translation>
    </message>
    <message>
      <source>backend default ({0})</source>
      <translation>后端默认（{0}）</translation>
    </message>
    <message>
      <source>ready: </source>
      <translation>就绪：</translation>
    </message>
    <message>
      <source> (replaying a recorded answer)</source>
      <translation>（回放已录制的答案）</translation>
    </message>
    <message>
      <source>Cancelled.</source>
      <translation>已取消。</translation>
    </message>
    <message>
      <source>waiting in the backend's queue (position {0})</source>
      <translation>正在后端队列中等待（第 {0} 位）</translation>
    </message>
    <message>
      <source>{0} object(s) found.</source>
      <translation>找到 {0} 个目标。</translation>
    </message>
    <message>
      <source>asking the backend at {0}...</source>
      <translation>正在询问位于 {0} 的后端……</translation>
    </message>
    <message>
      <source>loading the models... ({0})</source>
      <translation>正在加载模型……（{0}）</translation>
    </message>
    <message>
      <source>the models failed to load: {0}</source>
      <translation>模型加载失败：{0}</translation>
    </message>
    <message>
      <source>Type a question first.</source>
      <translation>请先输入问题。</translation>
    </message>
    <message>
      <source>Could not move the answers beside the project: {0}</source>
      <translation>无法将回答移动到项目旁边：{0}</translation>
    </message>
    <message>
      <source>The answers moved beside the project, but saving the project again failed: {0}. Save it once more.</source>
      <translation>回答已移动到项目旁边，但再次保存项目失败：{0}。请再保存一次。</translation>
    </message>
    <message>
      <source>Check (doctor)</source>
      <translation>检查（doctor）</translation>
    </message>
    <message>
      <source>Python, torch, CUDA, GPU memory, disk and the chosen models of the local backend</source>
      <translation>本地后端的 Python、torch、CUDA、GPU 显存、磁盘和所选模型</translation>
    </message>
    <message>
      <source>Checking...</source>
      <translation>正在检查……</translation>
    </message>
    <message>
      <source>No local backend: install one from the set-up panel in the GeoReasoner dock.</source>
      <translation>没有本地后端：请在 GeoReasoner 停靠面板的设置面板中安装。</translation>
    </message>
    <message>
      <source>All good.</source>
      <translation>一切正常。</translation>
    </message>
    <message>
      <source>{0} problem(s), each with what to do, below.</source>
      <translation>发现 {0} 个问题，处理方法见下方。</translation>
    </message>
    <message>
      <source>GeoPackage (one file, with the reasoning)</source>
      <translation>GeoPackage（单个文件，包含推理过程）</translation>
    </message>
    <message>
      <source>Shapefiles (a folder; the reasoning in a text file)</source>
      <translation>Shapefile（一个文件夹；推理过程保存在文本文件中）</translation>
    </message>
    <message>
      <source>Format</source>
      <translation>格式</translation>
    </message>
    <message>
      <source>Source CRS (as captured)</source>
      <translation>源坐标系（采集时）</translation>
    </message>
    <message>
      <source>Another CRS</source>
      <translation>其他坐标参考系</translation>
    </message>
    <message>
      <source>Coordinate reference system</source>
      <translation>坐标参考系</translation>
    </message>
    <message>
      <source>Save to</source>
      <translation>保存到</translation>
    </message>
    <message>
      <source>Masks as GeoTIFF files (beside the export)</source>
      <translation>掩膜导出为 GeoTIFF 文件（位于导出文件旁边）</translation>
    </message>
    <message>
      <source>Export shapefiles to folder</source>
      <translation>将 Shapefile 导出到文件夹</translation>
    </message>
    <message>
      <source>Export to GeoPackage</source>
      <translation>导出到 GeoPackage</translation>
    </message>
    <message>
      <source>Choose where to save the export.</source>
      <translation>请选择导出的保存位置。</translation>
    </message>
    <message>
      <source>Choose the coordinate reference system.</source>
      <translation>请选择坐标参考系。</translation>
    </message>
    <message>
      <source>Exported {0} answer(s): {1} file(s) in &lt;a href="{2}"&gt;{3}&lt;/a&gt;.</source>
      <translation>已导出 {0} 个回答：{1} 个文件，位于 &lt;a href="{2}"&gt;{3}&lt;/a&gt;。</translation>
    </message>
    <message>
      <source>Export {0} answer(s)</source>
      <translation>导出 {0} 个回答</translation>
    </message>
    <message>
      <source>Project CRS ({0})</source>
      <translation>项目坐标参考系（{0}）</translation>
    </message>
    <message>
      <source>Export answers</source>
      <translation>导出答案</translation>
    </message>
    <message>
      <source>{0} file(s) exist already in {1}. Overwrite them?</source>
      <translation>{1} 中已有 {0} 个文件。是否覆盖？</translation>
    </message>
    <message>
      <source>Correct</source>
      <translation>修正</translation>
    </message>
    <message>
      <source>Rename...</source>
      <translation>重命名……</translation>
    </message>
    <message>
      <source>Delete</source>
      <translation>删除</translation>
    </message>
    <message>
      <source>Export...</source>
      <translation>导出...</translation>
    </message>
    <message>
      <source>Select the one answer to correct.</source>
      <translation>请选择要修正的那一个回答。</translation>
    </message>
    <message>
      <source>Select one or more answers to export.</source>
      <translation>请选择一个或多个要导出的答案。</translation>
    </message>
    <message>
      <source>Select one answer to rename.</source>
      <translation>请选择一个要重命名的回答。</translation>
    </message>
    <message>
      <source>Rename answer</source>
      <translation>重命名回答</translation>
    </message>
    <message>
      <source>Name</source>
      <translation>名称</translation>
    </message>
    <message>
      <source>Select the answers to delete.</source>
      <translation>请选择要删除的回答。</translation>
    </message>
    <message>
      <source>Delete answers</source>
      <translation>删除回答</translation>
    </message>
    <message>
      <source>Delete {0} answer(s), their layers and their stored data?</source>
      <translation>删除 {0} 个回答及其图层和已保存的数据？</translation>
    </message>
    <message>
      <source>Cannot read the answer store: {0}</source>
      <translation>无法读取答案库：{0}</translation>
    </message>
    <message>
      <source>capturing the image</source>
      <translation>正在截取影像</translation>
    </message>
    <message>
      <source>sending the image</source>
      <translation>正在发送图像</translation>
    </message>
    <message>
      <source>waiting in the backend's queue</source>
      <translation>正在后端队列中等待</translation>
    </message>
    <message>
      <source>preparing the image</source>
      <translation>正在准备图像</translation>
    </message>
    <message>
      <source>reasoning</source>
      <translation>推理中</translation>
    </message>
    <message>
      <source>reading the answer</source>
      <translation>正在读取答案</translation>
    </message>
    <message>
      <source>segmenting (SAM2)</source>
      <translation>正在分割（SAM2）</translation>
    </message>
    <message>
      <source>tracing contours</source>
      <translation>正在描绘轮廓</translation>
    </message>
    <message>
      <source>storing the answer</source>
      <translation>正在保存回答</translation>
    </message>
    <message>
      <source>done</source>
      <translation>完成</translation>
    </message>
    <message>
      <source>kept in QGIS's authentication manager</source>
      <translation>保存在 QGIS 的认证管理器中</translation>
    </message>
    <message>
      <source>Download</source>
      <translation>下载</translation>
    </message>
    <message>
      <source>Cancel download</source>
      <translation>取消下载</translation>
    </message>
    <message>
      <source>Use selected</source>
      <translation>使用所选</translation>
    </message>
    <message>
      <source>Local folder...</source>
      <translation>本地文件夹……</translation>
    </message>
    <message>
      <source>Offline machine: copy a model folder from elsewhere and choose it here</source>
      <translation>离线机器：从别处复制模型文件夹，然后在此选择</translation>
    </message>
    <message>
      <source>Tiny models (smoke test)</source>
      <translation>微型模型（冒烟测试）</translation>
    </message>
    <message>
      <source>Random tiny models built on this machine: they test the install, their answers are meaningless</source>
      <translation>在本机构建的随机微型模型：用于测试安装，其回答没有意义</translation>
    </message>
    <message>
      <source>Building the tiny models...</source>
      <translation>正在构建微型模型……</translation>
    </message>
    <message>
      <source>Tiny RANDOM models chosen: they answer nonsense, and test that everything runs.</source>
      <translation>已选择随机微型模型：它们的回答没有意义，只用于测试一切能否运行。</translation>
    </message>
    <message>
      <source>Hub token (gated models only)</source>
      <translation>Hub 令牌（仅受限模型需要）</translation>
    </message>
    <message>
      <source>all (segmenter)</source>
      <translation>全部（分割模型）</translation>
    </message>
    <message>
      <source>gated; not used by the cascade</source>
      <translation>受限访问；级联流程不使用</translation>
    </message>
    <message>
      <source>yes</source>
      <translation>是</translation>
    </message>
    <message>
      <source>Model folder (config.json and *.safetensors)</source>
      <translation>模型文件夹（config.json 和 *.safetensors）</translation>
    </message>
    <message>
      <source>Install the local backend first: the tiny models are built with its Python.</source>
      <translation>请先安装本地后端：微型模型要用它的 Python 构建。</translation>
    </message>
    <message>
      <source>Select a checkpoint first.</source>
      <translation>请先选择一个检查点。</translation>
    </message>
    <message>
      <source>Install the local backend first: downloads run with its Python.</source>
      <translation>请先安装本地后端：下载要用它的 Python 运行。</translation>
    </message>
    <message>
      <source>Wait for the running download to end, or cancel it.</source>
      <translation>请等待当前下载结束，或取消它。</translation>
    </message>
    <message>
      <source>no GPU</source>
      <translation>无 GPU</translation>
    </message>
    <message>
      <source>no</source>
      <translation>否</translation>
    </message>
    <message>
      <source>demo: a recorded answer replayed, segmenter {0}</source>
      <translation>演示：回放一个录制的回答，分割模型 {0}</translation>
    </message>
    <message>
      <source>reasoner {0}, segmenter {1}</source>
      <translation>推理模型 {0}，分割模型 {1}</translation>
    </message>
    <message>
      <source>(the profile's checkpoint)</source>
      <translation>（该配置的检查点）</translation>
    </message>
    <message>
      <source>Chosen: {0}</source>
      <translation>已选择：{0}</translation>
    </message>
    <message>
      <source>Downloading {0}...</source>
      <translation>正在下载 {0}……</translation>
    </message>
    <message>
      <source>{0} has no config.json and *.safetensors weights: choose the folder that holds them.</source>
      <translation>{0} 中没有 config.json 和 *.safetensors 权重：请选择包含它们的文件夹。</translation>
    </message>
    <message>
      <source>Building the tiny models failed: {0}</source>
      <translation>构建微型模型失败：{0}</translation>
    </message>
    <message>
      <source>Downloading {0}: {1} to fetch of {2}.</source>
      <translation>正在下载 {0}：共 {2}，需获取 {1}。</translation>
    </message>
    <message>
      <source>The download stopped (exit code {0}); Download again resumes it.</source>
      <translation>下载已停止（退出码 {0}）；再次点击“下载”可继续。</translation>
    </message>
    <message>
      <source>Download cancelled; Download again resumes where it stopped.</source>
      <translation>下载已取消；再次点击“下载”会从中断处继续。</translation>
    </message>
    <message>
      <source>{0} is downloaded.</source>
      <translation>{0} 已下载。</translation>
    </message>
    <message>
      <source>Checking {0}...</source>
      <translation>正在校验 {0}……</translation>
    </message>
    <message>
      <source>Backend</source>
      <translation>后端</translation>
    </message>
    <message>
      <source>URL</source>
      <translation>URL</translation>
    </message>
    <message>
      <source>Token (authentication config; the token is its password)</source>
      <translation>令牌（认证配置；令牌即其密码）</translation>
    </message>
    <message>
      <source>Token file of a local backend (empty: the default)</source>
      <translation>本地后端的令牌文件（留空：默认位置）</translation>
    </message>
    <message>
      <source>Timeout (no data from the backend)</source>
      <translation>超时（后端无数据）</translation>
    </message>
    <message>
      <source>Capture defaults</source>
      <translation>采集默认设置</translation>
    </message>
    <message>
      <source>Source</source>
      <translation>来源</translation>
    </message>
    <message>
      <source>Largest image side</source>
      <translation>图像最长边</translation>
    </message>
    <message>
      <source>Local backend</source>
      <translation>本地后端</translation>
    </message>
    <message>
      <source>Python interpreter (of the backend venv)</source>
      <translation>Python 解释器（后端虚拟环境中的）</translation>
    </message>
    <message>
      <source>hub id or folder (empty: the profile's checkpoint)</source>
      <translation>Hub 标识或文件夹（留空：配置的默认检查点）</translation>
    </message>
    <message>
      <source>Reasoning model</source>
      <translation>推理模型</translation>
    </message>
    <message>
      <source>SAM2 model</source>
      <translation>SAM2 模型</translation>
    </message>
    <message>
      <source>A recorded model answer to replay instead of running a reasoning model (demos, tests)</source>
      <translation>回放一个已录制的模型回答，而不运行推理模型（用于演示和测试）</translation>
    </message>
    <message>
      <source>Replay a recorded answer</source>
      <translation>回放已录制的回答</translation>
    </message>
    <message>
      <source>Start the local backend when QGIS starts</source>
      <translation>QGIS 启动时启动本地后端</translation>
    </message>
    <message>
      <source>any free port</source>
      <translation>任意空闲端口</translation>
    </message>
    <message>
      <source>Port</source>
      <translation>端口</translation>
    </message>
    <message>
      <source>Start</source>
      <translation>启动</translation>
    </message>
    <message>
      <source>Stop</source>
      <translation>停止</translation>
    </message>
    <message>
      <source>Log</source>
      <translation>日志</translation>
    </message>
    <message>
      <source>not running</source>
      <translation>未运行</translation>
    </message>
    <message>
      <source>starting...</source>
      <translation>正在启动……</translation>
    </message>
    <message>
      <source>process running, not answering: {0}</source>
      <translation>进程在运行，但没有响应：{0}</translation>
    </message>
    <message>
      <source>loading the models...</source>
      <translation>正在加载模型……</translation>
    </message>
    <message>
      <source>ready at {0}</source>
      <translation>已就绪，地址 {0}</translation>
    </message>
    <message>
      <source>the models failed to load: {0} (see the log)</source>
      <translation>模型加载失败：{0}（请查看日志）</translation>
    </message>
    <message>
      <source>No backend yet. Choose one: install a local backend (a GPU gives real answers), connect to a GPU server, or try the demo.</source>
      <translation>尚无后端。请选择：安装本地后端（有 GPU 才能得到真实回答）、连接 GPU 服务器，或试用演示。</translation>
    </message>
    <message>
      <source>Set-up...</source>
      <translation>设置……</translation>
    </message>
    <message>
      <source>Set up the backend</source>
      <translation>设置后端</translation>
    </message>
    <message>
      <source>The backend stopped</source>
      <translation>后端已停止</translation>
    </message>
    <message>
      <source>Restart</source>
      <translation>重新启动</translation>
    </message>
    <message>
      <source>optional: a PyTorch wheel index (its cpu/cuXXX folders)</source>
      <translation>可选：PyTorch wheel 索引（含 cpu/cuXXX 子文件夹）</translation>
    </message>
    <message>
      <source>torch wheel index</source>
      <translation>torch wheel 索引</translation>
    </message>
    <message>
      <source>Install</source>
      <translation>安装</translation>
    </message>
    <message>
      <source>Remove backend</source>
      <translation>移除后端</translation>
    </message>
    <message>
      <source>Server URL</source>
      <translation>服务器 URL</translation>
    </message>
    <message>
      <source>the server's token (kept in QGIS's authentication manager)</source>
      <translation>服务器的令牌（保存在 QGIS 的认证管理器中）</translation>
    </message>
    <message>
      <source>Token</source>
      <translation>令牌</translation>
    </message>
    <message>
      <source>Test connection</source>
      <translation>测试连接</translation>
    </message>
    <message>
      <source>Use this server</source>
      <translation>使用此服务器</translation>
    </message>
    <message>
      <source>&lt;b&gt;DEMO, not real answers.&lt;/b&gt; A backend on tiny random models that replays one recorded answer (the lakes of the NAIP sample) through the real parser, segmenter and layers, so you can learn the dock, the answer layers and export in two minutes. Runs on the CPU; it needs the local backend installed (no GPU, no model download).</source>
      <translation>&lt;b&gt;演示，并非真实回答。&lt;/b&gt;一个使用随机微型模型的后端，通过真实的解析器、分割模型和图层回放一个录制的回答（NAIP 示例中的湖泊），让您在两分钟内熟悉停靠面板、回答图层和导出。在 CPU 上运行；需要已安装本地后端（无需 GPU，无需下载模型）。</translation>
    </message>
    <message>
      <source>Start the demo</source>
      <translation>启动演示</translation>
    </message>
    <message>
      <source>Installing the local backend... (Cancel stops it; nothing is marked ready until it is done.)</source>
      <translation>正在安装本地后端……（“取消”可停止；完成之前不会标记为就绪。）</translation>
    </message>
    <message>
      <source>DEMO backend (tiny random models replaying a recorded answer): it starts on your first question.</source>
      <translation>演示后端（随机微型模型回放录制的回答）：在您第一次提问时启动。</translation>
    </message>
    <message>
      <source>The local backend was installed for other package versions: press Repair.</source>
      <translation>本地后端是为其他软件包版本安装的：请点击“修复”。</translation>
    </message>
    <message>
      <source>The local backend is incomplete (an install failed or was cancelled): press Repair, or Remove backend.</source>
      <translation>本地后端不完整（安装失败或被取消）：请点击“修复”，或“移除后端”。</translation>
    </message>
    <message>
      <source>GeoReasoner: remove the local backend</source>
      <translation>GeoReasoner：移除本地后端</translation>
    </message>
    <message>
      <source>Install a local backend</source>
      <translation>安装本地后端</translation>
    </message>
    <message>
      <source>Connect to a GPU server</source>
      <translation>连接 GPU 服务器</translation>
    </message>
    <message>
      <source>Try it without a GPU (demo)</source>
      <translation>无 GPU 试用（演示）</translation>
    </message>
    <message>
      <source>Hide set-up</source>
      <translation>隐藏设置</translation>
    </message>
    <message>
      <source>Repair</source>
      <translation>修复</translation>
    </message>
    <message>
      <source>Local backend installed. Next: choose a model below (download it, pick a local folder, or the tiny models for a smoke test).</source>
      <translation>本地后端已安装。下一步：在下方选择模型（下载、选择本地文件夹，或用微型模型做冒烟测试）。</translation>
    </message>
    <message>
      <source>Cancelling the install...</source>
      <translation>正在取消安装……</translation>
    </message>
    <message>
      <source>Install cancelled: nothing was marked as installed. Install again to finish (it repairs what is there).</source>
      <translation>安装已取消：没有任何内容被标记为已安装。再次安装即可完成（会修复现有内容）。</translation>
    </message>
    <message>
      <source>Type the server's URL, e.g. http://gpu-host:8765.</source>
      <translation>请输入服务器的 URL，例如 http://gpu-host:8765。</translation>
    </message>
    <message>
      <source>The demo needs the local backend (CPU is enough): installing it first...</source>
      <translation>演示需要本地后端（CPU 即可）：先进行安装……</translation>
    </message>
    <message>
      <source>Detected: {0}.</source>
      <translation>检测到：{0}。</translation>
    </message>
    <message>
      <source>Using the GPU server {0}. Ask a question; Set-up... changes it.</source>
      <translation>正在使用 GPU 服务器 {0}。请提问；“设置……”可更改。</translation>
    </message>
    <message>
      <source>Local backend ready to start: it starts on your first question (models: {0}).</source>
      <translation>本地后端可以启动：在您第一次提问时启动（模型：{0}）。</translation>
    </message>
    <message>
      <source>the profile's checkpoint</source>
      <translation>该配置的检查点</translation>
    </message>
    <message>
      <source>Removing {0}...</source>
      <translation>正在移除 {0}……</translation>
    </message>
    <message>
      <source>Testing {0}...</source>
      <translation>正在测试 {0}……</translation>
    </message>
    <message>
      <source>Connected: GeoReasoner {0}, {1}; models {2}; profiles {3}; device {4}.</source>
      <translation>已连接：GeoReasoner {0}，{1}；模型 {2}；配置 {3}；设备 {4}。</translation>
    </message>
    <message>
      <source>Models (download sizes): {0}.</source>
      <translation>模型（下载大小）：{0}。</translation>
    </message>
    <message>
      <source>The local backend was removed. </source>
      <translation>本地后端已移除。</translation>
    </message>
    <message>
      <source>Wrong token: the server answers but refuses this token. Paste the token from the server's token file (its path is printed when `georeasoner serve` starts).</source>
      <translation>令牌错误：服务器有响应，但拒绝此令牌。请粘贴服务器令牌文件中的令牌（其路径在 `georeasoner serve` 启动时打印）。</translation>
    </message>
    <message>
      <source>Installing: {0} (step {1} of {2})... Cancel stops it.</source>
      <translation>正在安装：{0}（第 {1} 步，共 {2} 步）……“取消”可停止。</translation>
    </message>
    <message>
      <source>Installed in {0:.0f} s; doctor found the environment complete. </source>
      <translation>安装用时 {0:.0f} 秒；doctor 检查确认环境完整。</translation>
    </message>
    <message>
      <source>Server unreachable: {0}</source>
      <translation>无法连接服务器：{0}</translation>
    </message>
    <message>
      <source>Whole layer (tiled)</source>
      <translation>整个图层(分块)</translation>
    </message>
    <message>
      <source>Current extent at ground resolution (tiled)</source>
      <translation>当前范围,按地面分辨率(分块)</translation>
    </message>
    <message>
      <source>whole layer</source>
      <translation>整个图层</translation>
    </message>
    <message>
      <source>The tiled modes read the whole layer or the visible map</source>
      <translation>分块模式读取整个图层或可见地图</translation>
    </message>
    <message>
      <source>Choose a raster layer to read tile by tile.</source>
      <translation>请选择要逐块读取的栅格图层。</translation>
    </message>
    <message>
      <source>visible extent at {0}</source>
      <translation>可见范围,{0}</translation>
    </message>
    <message>
      <source>Reading {0} tile by tile ({1} px tiles, {2})...</source>
      <translation>正在逐块读取 {0}({1} 像素分块,{2})...</translation>
    </message>
    <message>
      <source>Current extent at ground resolution {0} (tiled)</source>
      <translation>当前范围,地面分辨率 {0}(分块)</translation>
    </message>
    <message>
      <source>The visible map does not overlap {0}: pan or zoom to it, or choose "Whole layer (tiled)".</source>
      <translation>可见地图与 {0} 不重叠:请平移或缩放到该图层,或选择"整个图层(分块)"。</translation>
    </message>
    <message>
      <source>GeoReasoner: ask the map</source>
      <translation>GeoReasoner：向地图提问</translation>
    </message>
    <message>
      <source>&amp;GeoReasoner</source>
      <translation>&amp;GeoReasoner</translation>
    </message>
    <message>
      <source>GeoReasoner help (README)</source>
      <translation>GeoReasoner 帮助（README）</translation>
    </message>
    <message>
      <source>Ask imagery</source>
      <translation>询问影像</translation>
    </message>
    <message>
      <source>Asks the GeoReasoner backend a question about a raster (read at native resolution, or at the given ground resolution, over the extent) and returns the answer's boxes, points, contours and mask in the raster's CRS. Every output is optional; SAM2 runs only when the contours or the mask are asked for. The backend is BACKEND_URL (default: Options &gt; GeoReasoner); the token comes from AUTHCFG (an authentication config whose password is the token), else the token file of the settings, else the file named by GEOREASONER_TOKEN_FILE, else the local backend's default token file. PROFILE is a profile name the backend lists in /v1/info (empty: the backend's default).</source>
      <translation>向 GeoReasoner 后端就某个栅格提问（在指定范围内按原始分辨率或给定地面分辨率读取），并以栅格的坐标参考系返回回答的框、点、轮廓和掩膜。每个输出都是可选的；只有请求轮廓或掩膜时才会运行 SAM2。后端地址为 BACKEND_URL（默认：选项 &gt; GeoReasoner）；令牌来自 AUTHCFG（密码即令牌的认证配置），否则来自设置中的令牌文件，否则来自 GEOREASONER_TOKEN_FILE 指定的文件，否则来自本地后端的默认令牌文件。PROFILE 是后端在 /v1/info 中列出的配置名称（留空：后端默认配置）。</translation>
    </message>
    <message>
      <source>Processing</source>
      <translation>处理工具</translation>
    </message>
    <message>
      <source>Question</source>
      <translation>问题</translation>
    </message>
    <message>
      <source>Extent (empty: the whole raster)</source>
      <translation>范围（留空：整个栅格）</translation>
    </message>
    <message>
      <source>Ground resolution, raster units per pixel (0 = native)</source>
      <translation>地面分辨率，每像素的栅格单位（0 = 原始）</translation>
    </message>
    <message>
      <source>Prompt profile (empty: backend default)</source>
      <translation>提示配置（留空：后端默认）</translation>
    </message>
    <message>
      <source>Backend URL</source>
      <translation>后端地址</translation>
    </message>
    <message>
      <source>Token (authentication config)</source>
      <translation>令牌（认证配置）</translation>
    </message>
    <message>
      <source>Invalid raster</source>
      <translation>无效的栅格</translation>
    </message>
    <message>
      <source>Type a question</source>
      <translation>请输入问题</translation>
    </message>
    <message>
      <source>Choose at least one output (BOXES, POINTS, CONTOURS or MASK).</source>
      <translation>请至少选择一个输出（BOXES、POINTS、CONTOURS 或 MASK）。</translation>
    </message>
    <message>
      <source>Asking the backend at {0} about {1} ({2})...</source>
      <translation>正在向位于 {0} 的后端询问 {1}（{2}）……</translation>
    </message>
    <message>
      <source>The backend has no profile {0}; it offers: {1}.</source>
      <translation>后端没有配置 {0}；可用的配置有：{1}。</translation>
    </message>
    <message>
      <source>Writing the mask {0} failed: {1}</source>
      <translation>写入掩膜 {0} 失败：{1}</translation>
    </message>
    <message>
      <source>Ask imagery over a raster (tiled)</source>
      <translation>对栅格提问影像(分块)</translation>
    </message>
    <message>
      <source>Asks the GeoReasoner backend a question over a whole raster (or an extent) at native resolution or the given ground resolution: the raster is read tile by tile, each tile is answered, and objects cut by tile edges are merged into one. Returns boxes, points and contours in the raster's CRS. Cancelling keeps the tiles already answered.</source>
      <translation>以原始分辨率或给定的地面分辨率,就整个栅格(或某一范围)向 GeoReasoner 后端提问:逐块读取栅格,逐块作答,被分块边界切开的目标合并为一个。在栅格的坐标参考系中返回边框、点和轮廓。取消时保留已完成的分块。</translation>
    </message>
    <message>
      <source>Tile size, pixels (0 = the profile's frame)</source>
      <translation>分块大小,像素(0 = 配置的模型画幅)</translation>
    </message>
    <message>
      <source>Overlap between tiles, %</source>
      <translation>分块重叠,%</translation>
    </message>
    <message>
      <source>Prompt profile</source>
      <translation>提示配置</translation>
    </message>
    <message>
      <source>Strategy (focus: an overview first, then only the tiles meeting its boxes; needs a local backend and a raster file)</source>
      <translation>策略(聚焦:先看概览,再只问与其边框相交的分块;需要本地后端和栅格文件)</translation>
    </message>
    <message>
      <source>The focus strategy asks the whole raster at native resolution; clear the extent and the ground resolution, or use the grid strategy.</source>
      <translation>聚焦策略以原始分辨率询问整个栅格;请清除范围和地面分辨率,或使用网格策略。</translation>
    </message>
    <message>
      <source>{0} object(s) found over {1} tile(s).</source>
      <translation>在 {1} 个分块中找到 {0} 个目标。</translation>
    </message>
    <message>
      <source>Asking {0} tile(s) of {1} px ({2}-tile grid)...</source>
      <translation>正在提问 {0} 个 {1} 像素的分块(共 {2} 块的网格)……</translation>
    </message>
    <message>
      <source>{0} / {1} tiles, {2} object(s) so far{3}</source>
      <translation>{0} / {1} 个分块,目前 {2} 个目标{3}</translation>
    </message>
    <message>
      <source>, about {0:.0f} s left</source>
      <translation>,约剩 {0:.0f} 秒</translation>
    </message>
    <message>
      <source>GeoReasoner: {0}</source>
      <translation>GeoReasoner：{0}</translation>
    </message>
    <message>
      <source>Unexpected error: {0}</source>
      <translation>意外错误：{0}</translation>
    </message>
    <message>
      <source>Model missing</source>
      <translation>缺少模型</translation>
    </message>
    <message>
      <source>Model needs access</source>
      <translation>模型需要访问权限</translation>
    </message>
    <message>
      <source>Not enough GPU memory</source>
      <translation>GPU 显存不足</translation>
    </message>
    <message>
      <source>No GPU</source>
      <translation>无 GPU</translation>
    </message>
    <message>
      <source>Backend not installed</source>
      <translation>后端未安装</translation>
    </message>
    <message>
      <source>Backend incomplete</source>
      <translation>后端不完整</translation>
    </message>
    <message>
      <source>Backend broken</source>
      <translation>后端已损坏</translation>
    </message>
    <message>
      <source>Disk almost full</source>
      <translation>磁盘空间即将用尽</translation>
    </message>
    <message>
      <source>The backend could not load its models: {0}. Fix that in the set-up panel, then Restart.</source>
      <translation>后端无法加载模型：{0}。请在设置面板中解决后点击“重新启动”。</translation>
    </message>
    <message>
      <source>Checking the backend (georeasoner doctor)...</source>
      <translation>正在检查后端（georeasoner doctor）……</translation>
    </message>
    <message>
      <source>Starting the backend...</source>
      <translation>正在启动后端……</translation>
    </message>
    <message>
      <source> DEMO: tiny random models replaying a recorded answer.</source>
      <translation> 演示：随机微型模型回放录制的回答。</translation>
    </message>
    <message>
      <source>Out of GPU memory while loading the models: choose a smaller checkpoint in the set-up panel's model picker, close other programs using the GPU, or connect to a GPU server. ({0})</source>
      <translation>加载模型时 GPU 显存不足：请在设置面板的模型选择器中选择较小的检查点，关闭其他占用 GPU 的程序，或连接 GPU 服务器。（{0}）</translation>
    </message>
    <message>
      <source>Model missing: download it in the set-up panel's model picker, or choose a local folder. ({0})</source>
      <translation>缺少模型：请在设置面板的模型选择器中下载，或选择本地文件夹。（{0}）</translation>
    </message>
    <message>
      <source>Version mismatch: the backend speaks answer protocol {0} and this plugin protocol {1}. Install the same GeoReasoner release on both sides (local backend: Install again repairs it; a GPU server: update it or the plugin).</source>
      <translation>版本不匹配：后端使用回答协议 {0}，本插件使用协议 {1}。请在两端安装相同版本的 GeoReasoner（本地后端：重新安装即可修复；GPU 服务器：更新服务器或插件）。</translation>
    </message>
    <message>
      <source>Loading models (0 s)...</source>
      <translation>正在加载模型（0 秒）……</translation>
    </message>
    <message>
      <source>Ready: ask a question.</source>
      <translation>就绪：请提问。</translation>
    </message>
    <message>
      <source>The backend's Python ({0}) cannot be run: install the backend again from the set-up panel.</source>
      <translation>无法运行后端的 Python（{0}）：请在设置面板中重新安装后端。</translation>
    </message>
    <message>
      <source>Starting the backend ({0} s)...</source>
      <translation>正在启动后端（{0} 秒）……</translation>
    </message>
    <message>
      <source>The backend stopped (exit code {0}). Its last log lines are shown in the set-up panel; fix what they say, then press Restart.</source>
      <translation>后端已停止（退出码 {0}）。其最后几行日志显示在设置面板中；请按提示解决后点击“重新启动”。</translation>
    </message>
    <message>
      <source>doctor could not check the backend (exit code {0}): {1}. Install the backend again from the set-up panel.</source>
      <translation>doctor 无法检查后端（退出码 {0}）：{1}。请在设置面板中重新安装后端。</translation>
    </message>
    <message>
      <source>Loading models ({0} s)...</source>
      <translation>正在加载模型（{0} 秒）……</translation>
    </message>
    <message>
      <source>The map shows nothing to ask about: add imagery (a raster layer) to the map first.</source>
      <translation>地图上没有可提问的内容：请先将影像（栅格图层）添加到地图。</translation>
    </message>
    <message>
      <source>The map canvas is too small to capture.</source>
      <translation>地图画布太小，无法采集。</translation>
    </message>
    <message>
      <source>The map canvas has no valid extent or CRS to capture.</source>
      <translation>地图画布没有有效的范围或坐标系，无法采集。</translation>
    </message>
    <message>
      <source>Choose a raster layer to read (the capture reads a raster).</source>
      <translation>请选择要读取的栅格图层（截取会读取一个栅格）。</translation>
    </message>
    <message>
      <source>the area of interest</source>
      <translation>感兴趣区域</translation>
    </message>
    <message>
      <source>the visible extent</source>
      <translation>可见范围</translation>
    </message>
    <message>
      <source>This map capture has been used already.</source>
      <translation>该地图截取已被使用过。</translation>
    </message>
    <message>
      <source>Rendering the map failed.</source>
      <translation>地图渲染失败。</translation>
    </message>
    <message>
      <source>The map was captured at {0} x {1} pixels (capture size limit).</source>
      <translation>地图已按 {0} x {1} 像素截取（截取尺寸限制）。</translation>
    </message>
    <message>
      <source>The raster {0} does not cover {1}. Pan the map to the raster, or choose another area.</source>
      <translation>栅格 {0} 未覆盖{1}。请将地图平移到该栅格，或选择其他区域。</translation>
    </message>
    <message>
      <source>{0} was read at {1:.3g} map units per pixel instead of its native resolution (capture size limit {2} px).</source>
      <translation>{0} 以每像素 {1:.3g} 地图单位读取，而非原始分辨率（采集尺寸上限 {2} 像素）。</translation>
    </message>
    <message>
      <source>The raster {0} has no renderer.</source>
      <translation>栅格 {0} 没有渲染器。</translation>
    </message>
    <message>
      <source>Reading the raster {0} failed.</source>
      <translation>读取栅格 {0} 失败。</translation>
    </message>
    <message>
      <source>Start one from Settings &gt; Options &gt; GeoReasoner (Local backend &gt; Start), or in a shell: georeasoner serve</source>
      <translation>请在 设置 &gt; 选项 &gt; GeoReasoner 中启动一个（本地后端 &gt; 启动），或在终端中运行：georeasoner serve</translation>
    </message>
    <message>
      <source>The backend closed the answer stream before answering: it may have crashed or been stopped. Look at its log (Options &gt; GeoReasoner &gt; Local backend log), then start it again.</source>
      <translation>后端在回答之前关闭了答案流：它可能已崩溃或被停止。请查看其日志（选项 &gt; GeoReasoner &gt; 本地后端日志），然后重新启动。</translation>
    </message>
    <message>
      <source>The backend refused the token. Set the token in Options &gt; GeoReasoner (a local backend's token file, whose path the backend prints when it starts, or an authentication config).</source>
      <translation>后端拒绝了令牌。请在 选项 &gt; GeoReasoner 中设置令牌（本地后端的令牌文件，其路径在后端启动时打印；或一个认证配置）。</translation>
    </message>
    <message>
      <source>The backend refused the request (its host check). Use the address it printed.</source>
      <translation>后端拒绝了请求（主机检查）。请使用后端打印的地址。</translation>
    </message>
    <message>
      <source>The image is too large for the backend. Lower the capture size in Options &gt; GeoReasoner.</source>
      <translation>图像对后端来说太大。请在 选项 &gt; GeoReasoner 中降低采集尺寸。</translation>
    </message>
    <message>
      <source>The backend cannot read the captured image format.</source>
      <translation>后端无法读取所采集图像的格式。</translation>
    </message>
    <message>
      <source>The backend is busy with other questions; try again in a moment.</source>
      <translation>后端正忙于其他问题，请稍后再试。</translation>
    </message>
    <message>
      <source>The backend is not ready (models still loading, or they failed to load). Wait, or look at its log.</source>
      <translation>后端尚未就绪（模型仍在加载，或加载失败）。请等待，或查看其日志。</translation>
    </message>
    <message>
      <source>The backend timed out answering. Try a smaller capture or a lighter model.</source>
      <translation>后端回答超时。请尝试更小的采集范围或更轻量的模型。</translation>
    </message>
    <message>
      <source>Look at the backend's log.</source>
      <translation>请查看后端的日志。</translation>
    </message>
    <message>
      <source>The backend answered with something that is not JSON.</source>
      <translation>后端返回的内容不是 JSON。</translation>
    </message>
    <message>
      <source>The backend closed the connection mid-answer: it may have crashed or been stopped. Look at its log, then start it again.</source>
      <translation>后端在回答途中关闭了连接：它可能已崩溃或被停止。请查看其日志，然后重新启动。</translation>
    </message>
    <message>
      <source>The backend sent a stream line that is not JSON; are the plugin and the backend the same version?</source>
      <translation>后端发送的流数据行不是 JSON；插件和后端的版本是否一致？</translation>
    </message>
    <message>
      <source>Backend error 401:</source>
      <translation>后端错误 401：</translation>
    </message>
    <message>
      <source>Backend error {0}: {1}</source>
      <translation>后端错误 {0}：{1}</translation>
    </message>
    <message>
      <source>The backend at {0} sent nothing for {1:.0f} s: it is stalled or too slow for this request. Raise the timeout in Options &gt; GeoReasoner, or use a smaller capture or a lighter model.</source>
      <translation>{0} 的后端已 {1:.0f} 秒没有发送任何数据：它已停滞或对本次请求来说太慢。请在 选项 &gt; GeoReasoner 中提高超时，或使用更小的采集范围或更轻量的模型。</translation>
    </message>
    <message>
      <source>The backend's answer does not follow the answer protocol: {0}</source>
      <translation>后端的答案不符合答案协议：{0}</translation>
    </message>
    <message>
      <source>The authentication config {0} (Options &gt; GeoReasoner &gt; Token) cannot be used: it is missing or the master password was not given.</source>
      <translation>无法使用认证配置 {0}（选项 &gt; GeoReasoner &gt; 令牌）：它不存在，或未提供主密码。</translation>
    </message>
    <message>
      <source>Lost the connection to the backend at {0} ({1}): it may have crashed or been stopped. Look at its log, then start it again. </source>
      <translation>与 {0} 的后端失去连接（{1}）：它可能已崩溃或被停止。请查看其日志，然后重新启动。</translation>
    </message>
    <message>
      <source>No GeoReasoner backend answers at {0} ({1}). </source>
      <translation>{0} 上没有 GeoReasoner 后端响应（{1}）。</translation>
    </message>
    <message>
      <source>No GeoReasoner backend answers at {0}. </source>
      <translation>{0} 没有 GeoReasoner 后端应答。</translation>
    </message>
    <message>
      <source>This answer was stored without its image (an older plugin); ask the question again to correct it.</source>
      <translation>此回答保存时没有附带影像（旧版插件）；请重新提问后再修正。</translation>
    </message>
    <message>
      <source>Object {0} is not in this answer.</source>
      <translation>对象 {0} 不在此回答中。</translation>
    </message>
    <message>
      <source>These files exist already: {0}</source>
      <translation>这些文件已存在：{0}</translation>
    </message>
    <message>
      <source>Unknown export format {0}</source>
      <translation>未知的导出格式 {0}</translation>
    </message>
    <message>
      <source>Writing the mask GeoTIFF {0} failed: {1}</source>
      <translation>写入掩膜 GeoTIFF {0} 失败：{1}</translation>
    </message>
    <message>
      <source>Export to {0} failed: {1}</source>
      <translation>导出到 {0} 失败：{1}</translation>
    </message>
    <message>
      <source>Cannot open {0} of answer {1} in {2}</source>
      <translation>无法在 {2} 中打开答案 {1} 的 {0}</translation>
    </message>
    <message>
      <source>The {0} layer of this answer cannot be opened from {1}.</source>
      <translation>无法从 {1} 打开此答案的 {0} 图层。</translation>
    </message>
    <message>
      <source>object {0}</source>
      <translation>目标 {0}</translation>
    </message>
    <message>
      <source>Set the backend's Python interpreter (the python of the venv where the GeoReasoner backend is installed) in Options &gt; GeoReasoner.</source>
      <translation>请在 选项 &gt; GeoReasoner 中设置后端的 Python 解释器（安装了 GeoReasoner 后端的虚拟环境中的 python）。</translation>
    </message>
    <message>
      <source>backend exited with code {0}</source>
      <translation>后端已退出，代码 {0}</translation>
    </message>
    <message>
      <source>no answer found</source>
      <translation>未找到答案</translation>
    </message>
    <message>
      <source>The model's answer could not be read ({0}): {1}. Nothing was added. Rephrase the question, or check that the profile matches the model.</source>
      <translation>无法读取模型的答案（{0}）：{1}。未添加任何内容。请换一种问法，或检查配置是否与模型匹配。</translation>
    </message>
    <message>
      <source>Every box of the answer lies outside the captured area ({0} x {1} px of {2}), so nothing was added. What you asked about is probably outside that area: zoom out or pan to it, or choose a larger area, then ask again.</source>
      <translation>回答中的所有框都位于截取区域之外（{2} 的 {0} x {1} 像素），因此没有添加任何内容。你所问的对象可能在该区域之外：请缩小或平移到它，或选择更大的区域，然后再次提问。</translation>
    </message>
    <message>
      <source>Could not write table {0} to {1}: {2}</source>
      <translation>无法将表 {0} 写入 {1}：{2}</translation>
    </message>
    <message>
      <source>Could not write the mask raster to {0}: {1}</source>
      <translation>无法将掩膜栅格写入 {0}：{1}</translation>
    </message>
    <message>
      <source>Cannot open the answer store {0} for writing.</source>
      <translation>无法以写入方式打开回答存储 {0}。</translation>
    </message>
    <message>
      <source>The answer {0} is not in {1} any more.</source>
      <translation>答案 {0} 已不在 {1} 中。</translation>
    </message>
    <message>
      <source>Could not update the answer in {0}: {1}</source>
      <translation>无法更新 {0} 中的答案：{1}</translation>
    </message>
    <message>
      <source>Could not update the mask of this answer in {0}.</source>
      <translation>无法更新 {0} 中此回答的掩膜。</translation>
    </message>
    <message>
      <source>Could not copy the answer into {0}: {1}</source>
      <translation>无法将回答复制到 {0}：{1}</translation>
    </message>
    <message>
      <source>Could not write the answer to {0}: {1}</source>
      <translation>无法将答案写入 {0}：{1}</translation>
    </message>
    <message>
      <source>Could not copy {0} into {1}: {2}</source>
      <translation>无法将 {0} 复制到 {1}：{2}</translation>
    </message>
    <message>
      <source>The backend planned other tiles than the plugin; are they the same version?</source>
      <translation>后端规划的分块与插件不同;两者版本是否一致?</translation>
    </message>
    <message>
      <source>The backend georeferenced the answer differently from the plugin's plan.</source>
      <translation>后端对回答的地理配准与插件的规划不同。</translation>
    </message>
    <message>
      <source>The focus strategy needs a backend on this machine (127.0.0.1) and a raster file it can read; use the grid strategy for this layer.</source>
      <translation>聚焦策略需要本机(127.0.0.1)上的后端以及它能读取的栅格文件;此图层请使用网格策略。</translation>
    </message>
    <message>
      <source>Cancelled: the answer holds the tiles finished before the cancel.</source>
      <translation>已取消:回答包含取消前完成的分块。</translation>
    </message>
    <message>
      <source>Reading tile {0} of {1} failed.</source>
      <translation>读取 {1} 的分块 {0} 失败。</translation>
    </message>
    <message>
      <source>The backend's tiled job failed: {0}. Look at the backend's log.</source>
      <translation>后端的分块任务失败:{0}。请查看后端日志。</translation>
    </message>
    <message>
      <source>Tiles of {0} px are larger than the backend accepts ({1} pixels); choose a smaller tile size.</source>
      <translation>{0} 像素的分块超过后端可接受的大小({1} 像素);请选择更小的分块。</translation>
    </message>
    <message>
      <source>Cancelled: the answer holds the {0} of {1} tiles finished before the cancel.</source>
      <translation>已取消:回答包含取消前完成的 {0} / {1} 个分块。</translation>
    </message>
    <message>
      <source>Tile {0} is {1} bytes as PNG, more than the backend accepts ({2}); choose a smaller tile size.</source>
      <translation>分块 {0} 的 PNG 为 {1} 字节,超过后端可接受的大小({2});请选择更小的分块。</translation>
    </message>
    <message>
      <source>The backend's tiled answer does not follow the answer protocol: {0}</source>
      <translation>后端的分块回答不符合回答协议:{0}</translation>
    </message>
    <message>
      <source>units</source>
      <translation>单位</translation>
    </message>
    <message>
      <source>asking {0} tile(s) of {1} px...</source>
      <translation>正在提问 {0} 个 {1} 像素的分块...</translation>
    </message>
    <message>
      <source>GeoReasoner (tiled): {0}</source>
      <translation>GeoReasoner(分块):{0}</translation>
    </message>
    <message>
      <source>Cancelled before any tile was answered; nothing was added.</source>
      <translation>在任何分块得到回答之前已取消;未添加任何内容。</translation>
    </message>
    <message>
      <source>reading {0} tile by tile...</source>
      <translation>正在逐块读取 {0}...</translation>
    </message>
    <message>
      <source>{0} (tiles so far)</source>
      <translation>{0}(已完成的分块)</translation>
    </message>
    <message>
      <source>The preview of {0} could not be filled in: {1}</source>
      <translation>无法填充 {0} 的预览：{1}</translation>
    </message>
    <message>
      <source>Cancelled before any tile was answered.</source>
      <translation>在任何分块得到回答之前已取消。</translation>
    </message>
    <message>
      <source>Cancelled</source>
      <translation>已取消</translation>
    </message>
  </context>
</TS>
